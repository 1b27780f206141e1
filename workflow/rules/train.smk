# Stage 4: train each network (the 3D DC2Fusion, its 2D slice-wise counterpart and the
# paper's published 2D baselines SwinFuse, MATR and DILRAN), once per seed of train.seeds.
# Each trains with its published recipe (fusion3d.learned.recipes), then train:, then
# train.overrides.<network> (fusion3d.config.network_train_config).
# One run per seed, train/<method>/seed-<seed>/ (the run layout of every stage).
# Resumable: the state lives in train/<method>/<run>/state/ (checkpoint every epoch); a killed job
# resumes from its last checkpoint when the rule runs again, but only when the checkpoint's
# fingerprint (split rows, resolved model and training configs) is this run's; another run's
# state is moved to state/stale-<UTC time>/ (never deleted) and training starts fresh.
# Training is the longest job of a study, so with few cores it starts before the baselines
# when both are ready (priority). With `resources: {gpu: true, gpus: N}` the job asks for N
# GPUs (SLURM --gpus=N through the profile) and runs N training processes on its node
# (torchrun, DistributedDataParallel); without a usable GPU it stops at once.


rule train:
    input:
        split=f"{R}/split/split.tsv",
        images=get_all_model_inputs,
    output:
        model=f"{R}/train/{{method}}/{{run}}/model.pt",
        history=f"{R}/train/{{method}}/{{run}}/history.csv",
    log:
        f"{R}/logs/train/{{method}}/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{method}}/{{run}}.tsv"
    wildcard_constraints:
        method="|".join(NETWORK_METHODS),
        run=r"seed-\d+",
    priority: 10
    conda:
        conda_env("train")
    threads: THREADS["train"]
    resources:
        mem_mb=train_mem_mb,
        runtime=60 if SOURCE == "synthetic" else 4320,
        gpu=TRAIN_GPUS,
        # SLURM: one task holding all N GPUs (torchrun starts the N processes); the plugin's
        # default --ntasks-per-gpu=1 would bind the job's single task to one GPU
        tasks_per_gpu=0 if TRAIN_GPUS > 1 else 1,
    params:
        state_dir=lambda w: f"{R}/train/{w.method}/{w.run}/state",
        model_config=lambda w: config["models"][w.method],
        train_config=lambda w: network_train_config(config, w.method, run_seed(w.run)),
        gpu=bool(GPU),
        gpus=TRAIN_GPUS,
    script:
        "../scripts/train.py"
