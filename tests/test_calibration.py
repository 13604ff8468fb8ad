"""`rag calibrate`: which detector `ask` uses, when a calibration goes in use (hand-built drafts), and, with
the real small generator over the sample corpus, an interrupted calibration that resumes and a stored
one that a restarted workspace answers with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.attribute.detector import Detector, Pooled, calibrated_path
from rag.config import Settings
from rag.evaluation.calibration import collect, fit, folder_of
from rag.evaluation.own_answers import OwnAnswers, QuestionResult

REPO = Path(__file__).resolve().parent.parent
SHAPE = (2, 2)  # layers, heads of the hand-built drafts


def _detector(method: str, in_use: bool | None) -> Detector:
    meta = {} if in_use is None else {"in_use": in_use}
    return Detector(method=method, threshold=0.5, abstain_risk=0.9, meta=meta)


def test_ask_reads_a_calibration_only_for_its_generator_and_only_once_in_use(tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    _detector("shipped for A", None).save(shipped / "model-A.json")
    calibrated = tmp_path / "calibration"
    _detector("calibrated for A", True).save(calibrated_path(calibrated, "model-A"))
    assert Detector.for_generator("model-A", shipped, calibrated).method == "calibrated for A"
    assert Detector.for_generator("model-A+int8", shipped, calibrated).method == "calibrated for A"
    assert Detector.for_generator("model-A", shipped).method == "shipped for A"  # no workspace given
    assert Detector.for_generator("model-B", shipped, calibrated).method == Detector.baseline().method
    _detector("calibrated for A", False).save(calibrated_path(calibrated, "model-A"))  # did not beat it
    assert Detector.for_generator("model-A", shipped, calibrated).method == "shipped for A"


def _drafts(separation: float, n_documents: int = 48, seed: int = 0) -> OwnAnswers:
    """Answerable and withheld drafts over many documents: a withheld (unanswerable) draft answered
    anyway is bad and looks back at its sources less, by ``separation``."""
    rng = np.random.default_rng(seed)
    own = OwnAnswers([], [], [], "model-A", SHAPE)
    for d in range(n_documents):
        for q in range(5):
            for answerable in (True, False):
                bad = not answerable or rng.random() < 0.3
                lookback = np.clip(rng.normal(0.6 - (separation if bad else 0.0), 0.1, 4), 0, 1)
                pooled = Pooled(lookback, lookback, -1.0, -0.5, int(rng.integers(3, 30)), -5.0)
                own.results.append(QuestionResult(
                    id=f"{d * 10 + q}-{'a' if answerable else 'u'}", title=f"document {d}", question="q?",
                    answerable=answerable, answer="a", no_sources=False, declined=False,
                    retrieved_gold=answerable, f1=0.0 if bad else 1.0, contains=not bad, label=int(bad),
                    risk=None, seconds=1.0))
                own.answers.append(pooled)
                own.sentences.append([pooled])
    return own


def test_a_calibration_goes_in_use_where_it_ranks_held_out_drafts_better() -> None:
    own = _drafts(separation=0.3)
    # a shipped detector that ranks these drafts backwards: it reads more lookback as more risk
    backwards = Detector(method="shipped", threshold=0.5, abstain_risk=0.9, feature_set="lookback",
                         n_layers=2, n_heads=2, mean=[0.5] * 4, scale=[0.1] * 4, coef=[1.0] * 4)
    detector, report = fit(own, backwards, say=lambda _: None)
    assert report.in_use and detector.meta["in_use"]
    assert report.calibrated.risk_auroc.value > 0.8 > report.shipped.risk_auroc.value
    assert report.n_check > 0 and report.questions == 240 and report.documents == 48


@pytest.mark.slow  # fits and bootstraps for seconds: the fast lane keeps one fit (above)
def test_a_calibration_that_does_not_beat_the_shipped_detector_stays_out_of_use() -> None:
    own = _drafts(separation=0.3)
    shipped = Detector.baseline(threshold=0.5, abstain_risk=0.95)  # already ranks these drafts well
    detector, report = fit(own, shipped, say=lambda _: None)
    if report.calibrated.risk_auroc.value <= report.shipped.risk_auroc.value:
        assert not report.in_use and "does not beat" in report.why
    else:  # a trained detector may edge ahead; then it is in use, and says so
        assert report.in_use
    assert detector.meta["in_use"] == report.in_use


@pytest.mark.slow  # fits and bootstraps for seconds
def test_too_few_held_out_drafts_keep_the_shipped_detector() -> None:
    own = _drafts(separation=0.3, n_documents=4)
    backwards = Detector(method="shipped", threshold=0.5, abstain_risk=0.9, feature_set="lookback",
                         n_layers=2, n_heads=2, mean=[0.5] * 4, scale=[0.1] * 4, coef=[1.0] * 4)
    _, report = fit(own, backwards, say=lambda _: None)
    assert not report.in_use and "with more --questions" in report.why


@pytest.mark.slow  # the small generator writes and answers questions over the sample corpus
def test_an_interrupted_calibration_resumes_and_a_stored_one_outlives_a_restart(tmp_path: Path) -> None:
    from rag.core import Rag
    from tests.conftest import MODELS_CACHE

    settings = Settings(home=tmp_path / "home", models_cache=MODELS_CACHE, max_new_tokens=24)
    rag = Rag(settings)
    rag.ingest([REPO / "data"])

    class Stop(Exception):
        pass

    def stop_after_one(done: int, total: int, item: str) -> None:
        if done == 1:
            raise Stop

    with pytest.raises(Stop):
        collect(rag, questions=2, seed=0, progress=stop_after_one)
    generator = rag.load_generator().generator.name
    folder = folder_of(settings.calibration_dir, generator)
    first = OwnAnswers.load(folder / "drafts")
    assert [r.id.split("-")[1] for r in first.results] == ["a", "u"]  # one question, asked both ways
    dropped = (folder / "dropped.jsonl").read_text() if (folder / "dropped.jsonl").exists() else ""

    resumed = collect(rag, questions=2, seed=0)
    assert [r.id for r in resumed.results[:2]] == [r.id for r in first.results]  # kept, not asked again
    assert len(resumed.results) == 4 and len(resumed.answers) == len(resumed.sentences) == 4
    after = (folder / "dropped.jsonl").read_text() if (folder / "dropped.jsonl").exists() else ""
    assert after.startswith(dropped)  # chunks already dropped are not tried again
    withheld = resumed.results[1]
    assert not withheld.answerable and withheld.question == resumed.results[0].question

    # a calibration in use is read by a restarted workspace's ask, for this generator
    _detector("calibrated here", True).save(calibrated_path(settings.calibration_dir, generator))
    answer = Rag(settings).ask("Who rowed out to rescue the survivors of the Forfarshire?")
    assert answer.hallucination.method == "calibrated here"
