"""Tools in rollouts: the toolbox a run and its teacher use, and the jail the Python tool runs in.

- `toolbox`: tool schemas, calls and trajectories as the rubricator and judge see them;
- `sandbox`: the jail (threat model in docs/sandbox.md); `sandbox_boot`: what runs inside it.
"""

__all__ = ["sandbox", "sandbox_boot", "toolbox"]
