"""Report: what a person reads about an Answer (the attribution report, HTML and its view model)."""
