"""Test doubles shared by tests/ and experiments/: no model, no network beyond loopback.

* `scripted_server`: a real OpenAI-compatible HTTP server on 127.0.0.1 whose replies a handler scripts
  (delays, errors, dropped connections), for fault injection and for a rubricator/judge without a model.
* `judge_scripts`: handler helpers that read a rendered rubricator or judge prompt the way a model
  would (boundary-coded blocks, criteria lines) and build rubric and verdict replies.
* `injection_attacks`: adversarial rollouts that try to raise their own grade.
"""

__all__ = ["injection_attacks", "judge_scripts", "scripted_server", "tool_scripts"]
