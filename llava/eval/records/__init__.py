"""What an evaluation run leaves beside its answers: the sidecar files (run-stats log, run record,
skipped samples), their summaries and checks, and the metric files the scorers' results go to."""
