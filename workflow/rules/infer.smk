# Stage 5: fuse every subject of every split with each trained network (each seed's model).


rule infer:
    input:
        model=f"{R}/train/{{method}}/seed-{{seed}}/model.pt",
        split=f"{R}/split/split.tsv",
        images=get_all_model_inputs,
    output:
        index=f"{R}/fused/{{method}}/seed-{{seed}}/index.tsv",
    log:
        f"{R}/logs/infer/{{method}}/seed-{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/infer/{{method}}/seed-{{seed}}.tsv"
    wildcard_constraints:
        method="|".join(f3d.NETWORK_METHODS),
        seed=r"\d+",
    priority: 10
    conda:
        conda_env("train")
    threads: THREADS["infer"]
    resources:
        mem_mb=6000,
        runtime=30 if SOURCE == "synthetic" else 240,
        gpu=GPU,
    params:
        out_dir=lambda w: f"{R}/fused/{w.method}/seed-{w.seed}",
        gpu=bool(GPU),
    script:
        "../scripts/infer.py"
