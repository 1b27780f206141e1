# Stage 5b: classic 3D fusion baselines for every subject (same outputs as the networks).


rule baseline:
    input:
        split=f"{R}/split/split.tsv",
        images=get_all_model_inputs,
    output:
        index=f"{R}/fused/{{method}}/index.tsv",
    log:
        f"{R}/logs/baselines/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/baselines/{{method}}.tsv"
    wildcard_constraints:
        method="|".join(f3d.CLASSIC_METHODS),
    conda:
        conda_env("evaluate")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30 if SOURCE == "synthetic" else 240,
    params:
        out_dir=lambda w: f"{R}/fused/{w.method}",
        params=lambda w: config["baselines"].get(w.method, {}),
    script:
        "../scripts/baseline.py"
