"""Run control: signals (a graceful stop, then an abort), the progress bar or plain
progress lines, and the exit codes. Imports no other room of ``learner``."""
