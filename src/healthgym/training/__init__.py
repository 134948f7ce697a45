"""What every model family trains with: the training loop, checkpoints, the CPU runtime
policy, distributed processes and the learning plots. Imports nothing from `models`."""
