"""One module (or package) per control. Each exposes `build(policy, route, shared) -> Stage | None`."""
