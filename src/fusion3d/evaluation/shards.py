"""The shards of the evaluation pass (rule evaluate_pass): how many jobs, and their tables.
Plain arithmetic, so that the workflow's driver can name them without the metric code."""

from __future__ import annotations

#: Subjects a job of the evaluation pass scores (rule evaluate_pass): 100 subjects x 30 fused
#: images at 128^3 are about 1 h of one CPU.
EVALUATION_SUBJECTS_PER_JOB = 100


def pass_tables(
    root: str, n_subjects: int, per_job: int = EVALUATION_SUBJECTS_PER_JOB
) -> list[str]:
    """The evaluation pass's shard tables of a study of ``n_subjects`` subjects under ``root``.

    ``ceil(n_subjects / per_job)`` shards (at least one):
    ``<root>/metrics/pass/shard-<k>-of-<n>.tsv``.
    """
    n = max(1, -(-int(n_subjects) // int(per_job)))
    return [f"{root}/metrics/pass/shard-{k}-of-{n}.tsv" for k in range(n)]
