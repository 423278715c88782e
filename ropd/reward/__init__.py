"""The rubric reward: teacher answers -> rubric -> judge verdicts -> scores.

- `teacher`: k teacher answers per prompt, fetched once and cached;
- `prompts`: the Jinja templates of the rubricator and judge, and how texts are embedded in them;
- `rubrics`, `judge`: rubric induction and judging;
- `scoring`, `targets`, `answers`: a group's score (`score_group`: verdicts, then the code checks), the verifiable
  targets, and reading and checking answers;
- `oracle`: the bench's analysis-only oracle reward;
- `rubric_reward`: the reward as a TRL reward function (`RubricReward`); `groups`: the records it writes per group;
  `setup`: building it from a run config, and the loopback servers of a local teacher and judge.
"""

__all__ = ["answers", "groups", "judge", "oracle", "prompts", "rubric_reward", "rubrics", "scoring", "setup", "targets", "teacher"]
