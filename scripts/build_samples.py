"""Build the binary files of the sample corpus, ``data/samples/keepers-lives.pdf`` and
``data/samples/automation.docx``, from the text below.

It uses the writers in ``tests/docfactory.py`` so that the repository has one PDF writer; the output is
byte-for-byte reproducible, and a test checks that the committed files match what this script builds.
Run from anywhere: ``.venv/bin/python scripts/build_samples.py [OUT_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
if str(REPO) not in sys.path:  # run as a script: make `tests.docfactory` importable
    sys.path.insert(0, str(REPO))

from tests.docfactory import make_docx, make_pdf  # noqa: E402

KEEPERS_TITLE = "The Lives of Lighthouse Keepers"

# One entry per PDF page: retrieval tests check that a question lands on the right page.
KEEPERS_PAGES = [
    """The Lives of Lighthouse Keepers

Part 1. The daily round

Before automation, every light was kept by people who lived beside it or inside it. The keeper's
first duty was simple to state and hard to perform: the light must never go out between sunset and
sunrise. Everything else in the day was arranged around that rule.

In the age of oil lamps the most constant task was trimming the wick. A charred wick smoked,
blackened the glass and dimmed the light, so keepers cut it back several times a night. American
keepers were nicknamed "wickies" for this reason. By day they polished the brass, cleaned the lens
prisms with soft cloths and spirit, and wiped salt and soot from the lantern windows. Many keepers
wore linen aprons in the lantern room so that rough clothing could not scratch the glass.

At a station with a rotating lens, the clockwork had to be wound by hand, often every two to four
hours. At a station with a fog signal the engines had to be started the moment the far headland
disappeared into the mist, and kept running until it cleared, which could mean days without proper
sleep.

Every event went into the logbook: the times the light was lit and put out, the weather at each
watch, the oil burned, ships that passed and ships in trouble. Inspectors read the logs on their
visits, and a careless entry could cost a keeper his post.

On an offshore rock the keepers were confined together for weeks. A crew of three usually shared the
watches, and a relief boat was due at regular intervals, often every four weeks, but it could be held
back for a fortnight or more by heavy seas. Keepers baked their own bread, fished from the landing
when the weather allowed, and passed the long evenings with reading, carving and model making.""",
    """Part 2. Keepers remembered

Most keepers did their work unnoticed, but a few became famous for what they did beyond it.

Grace Darling was the daughter of William Darling, keeper of the Longstone lighthouse in the Farne
Islands off Northumberland. Early on 7 September 1838 the paddle steamer Forfarshire struck a rock
nearby and broke in two. Grace saw survivors clinging to the rock, and she and her father rowed a
small coble more than a mile through heavy seas to reach them. In two trips they brought nine people
to safety. The rescue made her a national heroine, and she received gifts and letters from all over
Britain; she died of tuberculosis only four years later.

Ida Lewis kept the Lime Rock Light in the harbour of Newport, Rhode Island. She took over much of the
work as a girl when her father, the keeper, was disabled by a stroke, and she was officially
appointed keeper in 1879. She was a powerful rower and is credited with saving at least eighteen
lives, many of them soldiers from the nearby fort whose boats had capsized. The station was later
renamed the Ida Lewis Rock Light in her honour.

Abbie Burgess was seventeen when, in January 1856, her father left Matinicus Rock off the coast of
Maine to fetch supplies and a storm kept him away for about four weeks. Abbie kept the station's
lamps burning through the storm while caring for her mother and sisters, and moved the family into
the light towers when waves flooded their house. She later married a keeper's son and spent most of
her life at light stations.""",
    """Part 3. The Flannan Isles mystery

The lighthouse on Eilean Mor, the largest of the Flannan Isles some twenty miles west of Lewis in the
Outer Hebrides, was first lit in December 1899. Almost exactly a year later it became the scene of the
best known mystery in lighthouse history.

On the night of 15 December 1900 the steamer Archtor passed the islands and noted that the light was
not showing. Storms delayed the relief vessel Hesperus, which did not reach the island until
26 December 1900. No one came down to the landing to meet it. The relief keeper, Joseph Moore, went
up to the station and found it empty. The beds were unmade, the clock had stopped, and one set of
oilskins still hung on its peg.

The three missing men were the principal keeper James Ducat and the keepers Thomas Marshall and
Donald MacArthur. The last entries on the slate used for notes were dated 15 December, so the men
had vanished that day, probably in the afternoon, since the lamp had been cleaned and filled ready
for lighting.

The Northern Lighthouse Board sent its superintendent, Robert Muirhead, to investigate. He found
that the west landing had been badly damaged by the sea, with iron railings bent and a heavy box of
ropes torn from a crevice high above the water. He concluded that the men had gone down to secure
equipment during a storm and had been swept away by an unusually large wave. One man, perhaps seeing
the wave coming, may have run out without his oilskins to warn the others.

The official explanation has never satisfied everyone. Writers have blamed sea serpents, foreign
spies and quarrels between the keepers, and the story has inspired a poem, an opera and several
films. The light was automated in 1971 and has run without keepers ever since.""",
]

AUTOMATION_TITLE = "From Keepers to Computers"

AUTOMATION_BODY: list[str | list[list[str]]] = [
    "#! From Keepers to Computers: How the Lights Were Automated",
    "For most of their history lighthouses needed people. Over the twentieth century that changed, "
    "station by station, until almost every light in the world ran on its own. This note follows the "
    "change from the first self-igniting gas lights to solar-powered LED lanterns watched over by "
    "computers hundreds of miles away.",
    "# The sun valve",
    "The first big step came from Sweden. Gustaf Dalén, an engineer at the AGA company, built a light "
    "that could look after itself. His flasher fed acetylene gas to the burner only in short bursts, "
    "so a tank of gas lasted many months, and his sun valve switched the light on at dusk and off at "
    "dawn. The valve held a central blackened rod between polished ones: in daylight the dark rod "
    "absorbed heat, expanded and shut off the gas, and when the light faded it cooled and opened the "
    "supply again. Dalén received the Nobel Prize in Physics in 1912 for these inventions, and "
    "unattended acetylene lights soon spread to buoys and remote beacons around the world.",
    "# Automation in the United States",
    "After the Second World War the cost of keeping people at remote stations became hard to justify. "
    "In 1968 the United States Coast Guard began the Lighthouse Automation and Modernization Program, "
    "known as LAMP, which replaced keepers with automatic equipment at station after station. By the "
    "late 1980s only a handful of manned lights remained.",
    "Boston Light, on Little Brewster Island in Boston Harbor, was the exception. It was first lit in "
    "1716, making it the oldest light station in the country, and Congress passed a law requiring it "
    "to stay staffed. The light itself was automated in 1998, but keepers continued to live on the "
    "island. Sally Snowman, the last of them, served as keeper from 2003 until her retirement in 2023.",
    "# Britain and Ireland",
    "In Britain and Ireland the lighthouse authorities automated their stations through the 1980s and "
    "1990s. The Commissioners of Irish Lights withdrew the last keepers from the Baily lighthouse on "
    "Howth Head, near Dublin, in March 1997. The Northern Lighthouse Board finished the job in "
    "Scotland the following year, when Fair Isle South became its last station to be automated on "
    "31 March 1998.",
    "Trinity House marked the end of the era on 26 November 1998, when the last keepers left the North "
    "Foreland lighthouse in Kent. The ceremony was attended by the Duke of Edinburgh, then Master of "
    "Trinity House, and ended more than four hundred years of keepers in the lights of England and "
    "Wales.",
    "## Milestones",
    [
        ["Year", "Milestone"],
        ["1912", "Gustaf Dalén receives the Nobel Prize in Physics for the sun valve and flasher"],
        ["1968", "The US Coast Guard starts the Lighthouse Automation and Modernization Program (LAMP)"],
        ["1997", "The Baily lighthouse becomes the last Irish station to be automated"],
        ["1998", "Fair Isle South (March) and North Foreland (November) are automated"],
        ["2023", "Sally Snowman retires as keeper of Boston Light"],
    ],
    "# How an automatic station works",
    "A modern automatic light is a small, frugal machine. Solar panels charge a bank of batteries "
    "through the day; at night an LED lantern draws a few tens of watts where an old lamp burned "
    "paraffin by the gallon. A light sensor switches the lantern on, a lamp changer or a spare LED "
    "array takes over if the main one fails, and a monitoring unit reports the state of the light, "
    "the batteries and the fog signal by radio, mobile phone or satellite link to a control centre.",
    "Technicians now visit most stations only a few times a year, usually by helicopter or boat, to "
    "service the equipment and repair storm damage. Many former keepers' cottages have become "
    "museums, holiday lets or bird observatories, while the towers themselves carry on their work "
    "without anyone living in them.",
]


def _unwrap(page: str) -> str:
    """Join the hard-wrapped source lines of each paragraph; the PDF writer wraps to its own width."""
    return "\n\n".join(" ".join(para.split("\n")) for para in page.split("\n\n"))


def build(out_dir: Path = SAMPLES) -> list[Path]:
    """Write the binary samples into ``out_dir`` and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        make_pdf(out_dir / "keepers-lives.pdf", [_unwrap(p) for p in KEEPERS_PAGES], title=KEEPERS_TITLE),
        make_docx(out_dir / "automation.docx", AUTOMATION_BODY, title=AUTOMATION_TITLE),
    ]


if __name__ == "__main__":
    for written in build(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES):
        print(written)
