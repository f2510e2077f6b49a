"""What runs the work: the `rlhf-studio` command, pre-launch checks, the job queue and runner, following a
job, and the background sampler. It stands on `rm/`, `policy/`, `data/` and `core/`; only `app/` sits above."""
