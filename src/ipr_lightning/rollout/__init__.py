"""Batched rollouts: policies and the lock-step episode engine (no Lightning)."""
