# Stage 4: train each network (the 3D DC2Fusion, its 2D slice-wise counterpart and the
# paper's published 2D baselines SwinFuse, MATR and DILRAN), once per seed of train.seeds.
# Each trains with its published recipe (fusion3d.learned.recipes), then train:, then
# train.overrides.<network> (common.smk, network_train_config).
# Resumable: the state lives in train/<network>/seed-<seed>/state/ (checkpoint every epoch); a killed job
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
        model=f"{R}/train/{{network}}/seed-{{seed}}/model.pt",
        history=f"{R}/train/{{network}}/seed-{{seed}}/history.csv",
    log:
        f"{R}/logs/train/{{network}}/seed-{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{network}}/seed-{{seed}}.tsv"
    wildcard_constraints:
        network="|".join(f3d.NETWORK_METHODS),
        seed=r"\d+",
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
        state_dir=lambda w: f"{R}/train/{w.network}/seed-{w.seed}/state",
        model_config=lambda w: config["models"][w.network],
        train_config=lambda w: network_train_config(w.network, w.seed),
        gpu=bool(GPU),
        gpus=TRAIN_GPUS,
    script:
        "../scripts/train.py"
