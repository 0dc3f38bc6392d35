"""Operations: what a load balancer or an operator asks a running server (health, metrics)."""
