"""Parts several methods assemble: EMA teachers (momentum encoders) and feature queues."""
