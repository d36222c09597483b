"""Evaluation on validation pairs, the agent-versus-fixed-masks comparison and the listening
page."""
