"""The simulation engine: state, vmapped local training, the round program, the run loop, checkpoints."""
