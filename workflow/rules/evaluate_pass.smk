# Stage 6a: the evaluation pass. Every fused image of a subject (all methods, all seeds) is
# scored in one pass, so that the sources' side of the metrics (phase congruency, gradients,
# histograms, VIF pyramids: everything that depends only on the MRI and PET) is computed once
# per subject instead of once per method and seed (benchmarks/bench_metrics.py, CPU at 128^3:
# 2.9 s for a subject's first fused image, 1.2 s for each further one). The subjects are dealt
# to ceil(n / 100) jobs (fusion3d.evaluation.shards.pass_tables); rule evaluate then takes each
# run's rows from the shards.

# (method, seed) of every fused index the pass scores (seed None: a deterministic method).
EVAL_ENTRIES = [(m, run_seed(run)) for m, run in RUNS]


rule evaluate_pass:
    input:
        indexes=[fused_index(m, run) for m, run in RUNS],
        split=f"{R}/split/split.tsv",
        images=get_all_model_inputs,
    output:
        metrics=f"{R}/metrics/pass/shard-{{shard}}-of-{{n_shards}}.tsv",
    log:
        f"{R}/logs/evaluate/pass/shard-{{shard}}-of-{{n_shards}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/pass/shard-{{shard}}-of-{{n_shards}}.tsv"
    wildcard_constraints:
        shard=r"\d+",
        n_shards=r"\d+",
    conda:
        conda_env("evaluate")
    threads: THREADS["evaluate"]
    resources:
        mem_mb=3000,
        runtime=30 if SOURCE == "synthetic" else 720,
    params:
        protocols=config["evaluate"]["protocols"],
        entries=EVAL_ENTRIES,
        shard=lambda w: int(w.shard),
        n_shards=lambda w: int(w.n_shards),
    script:
        "../scripts/evaluate_pass.py"
