# Stage 5: fuse every subject of every split with each trained network (each seed's model).


rule infer:
    input:
        model=f"{R}/train/{{method}}/{{run}}/model.pt",
        split=f"{R}/split/split.tsv",
        images=get_all_model_inputs,
    output:
        index=f"{R}/fused/{{method}}/{{run}}/index.tsv",
    log:
        f"{R}/logs/infer/{{method}}/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/infer/{{method}}/{{run}}.tsv"
    wildcard_constraints:
        method="|".join(NETWORK_METHODS),
        run=r"seed-\d+",
    priority: 10
    conda:
        conda_env("train")
    threads: THREADS["infer"]
    resources:
        mem_mb=6000,
        runtime=30 if SOURCE == "synthetic" else 240,
        gpu=GPU,
    params:
        out_dir=lambda w: f"{R}/fused/{w.method}/{w.run}",
        gpu=bool(GPU),
    script:
        "../scripts/infer.py"
