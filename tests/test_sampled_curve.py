"""The curve replay takes the items each quarter of a GRPO run's steps played, in TRL's own order."""
from trl.trainer.grpo_trainer import RepeatSampler

from helpers.benchmarks.sampled_curve import quarter_items


def test_quarters_are_the_items_trls_sampler_gives_the_first_and_last_steps():
    ordered = [f"item{i}" for i in range(60)]
    groups_per_step, generations, steps = 3, 4, 10
    # 04's setting: one group per micro-batch, groups_per_step micro-batches per optimizer step, no shuffling
    sampler = RepeatSampler(ordered, mini_repeat_count=generations, batch_size=groups_per_step,
                            repeat_count=groups_per_step, shuffle=False)
    indices = list(sampler)
    per_step = generations * groups_per_step * groups_per_step  # indices one generation (one optimizer step) takes
    played = [sorted({ordered[i] for i in indices[k * per_step:(k + 1) * per_step]}, key=ordered.index)
              for k in range(steps)]
    quarters = quarter_items(ordered, groups_per_step, steps)
    assert quarters["first"] == played[0] + played[1]  # quarter of 10 steps: 2 steps
    assert quarters["last"] == played[8] + played[9]
    assert quarter_items(ordered, groups_per_step, 3) == {"first": played[0], "last": played[2]}
