# Stage 4: train each network (the 3D DC2Fusion and its 2D slice-wise counterpart).
# Resumable: the state lives in train/<network>/state/ (checkpoint every epoch); a killed job
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
        model=f"{R}/train/{{network}}/model.pt",
        history=f"{R}/train/{{network}}/history.csv",
    log:
        f"{R}/logs/train/{{network}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{network}}.tsv"
    wildcard_constraints:
        network="|".join(f3d.NETWORK_METHODS),
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
        state_dir=lambda w: f"{R}/train/{w.network}/state",
        model_config=lambda w: config["models"][w.network],
        train_config=config["train"],
        gpu=bool(GPU),
        gpus=TRAIN_GPUS,
    script:
        "../scripts/train.py"
