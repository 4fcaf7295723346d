"""A run with Mixup, CutMix and gradient accumulation through the loop:
it learns digits and resumes bitwise after a kill."""

from jaxcnn import metrics
from jaxcnn import trainer
from tests import resume


def test_a_mixup_run_learns_and_resumes_bitwise(digits_config, tmp_path):
  config = digits_config
  config.update(dict(mixup_alpha=0.4, cutmix_alpha=1.0, grad_accum_steps=2,
                     num_steps=100, log_every_steps=25,
                     checkpoint_every_steps=50, eval_every_steps=100))
  straight = str(tmp_path / 'straight')
  final = trainer.train_and_evaluate(config, straight)
  records = metrics.read_metrics(straight)
  losses = [r['train/loss'] for r in records if 'train/loss' in r]
  # 0.9722 (the quickstart, unmixed: 0.9944 after 660 steps).
  assert final['eval/accuracy'] > 0.95, final
  # Mixed targets keep the train loss up (1.08 from 2.24; eval 0.28): their
  # entropy has to be paid.
  assert losses[-1] < 0.6 * losses[0], losses
  assert losses[-1] > 3 * final['eval/loss'], (losses, final)

  # Killed after the checkpoint at step 50, while writing step 75's line.
  resume.assert_resumes_bitwise(config, straight, str(tmp_path / 'resumed'),
                                final, later_checkpoint=100, kept_lines=2)
