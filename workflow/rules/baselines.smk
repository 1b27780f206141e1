# Stage 5b: classic 3D fusion baselines for every subject (same outputs as the networks;
# a deterministic method has one run, fused/<method>/deterministic/).


rule baseline:
    input:
        split=f"{R}/split/split.tsv",
        images=get_all_model_inputs,
    output:
        index=f"{R}/fused/{{method}}/{{run}}/index.tsv",
    log:
        f"{R}/logs/baselines/{{method}}/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/baselines/{{method}}/{{run}}.tsv"
    wildcard_constraints:
        method="|".join(CLASSIC_METHODS),
        run=DETERMINISTIC_RUN,
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30 if SOURCE == "synthetic" else 240,
    params:
        out_dir=lambda w: f"{R}/fused/{w.method}/{w.run}",
        params=lambda w: config["baselines"].get(w.method, {}),
    script:
        "../scripts/baseline.py"
