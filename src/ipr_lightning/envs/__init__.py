"""Text environments (Gymnasium-shaped) the agent acts in."""
