"""Early-stop evaluation mode of the PGD engine.

Each sample keeps the first iterate that fools the model and leaves the working batch, so later
steps cost less. Every iterate the full loop visits is also checked here (x_0 .. x_T, the last one
with a no-grad forward), and the trajectories are the same for a model that treats samples
independently (eval mode), so its accuracy is never above the full loop's.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .loop import Plan, autocast, clean_grad, fooled_by, start, step, warn_nonfinite
from .objectives import LogitObjective


def run_early(obj: LogitObjective, x: Tensor, y: Tensor, plan: Plan) -> tuple[Tensor, Tensor]:
    """Run the loop with early stopping.

    Args:
        obj: a classifier objective on the batch x. x: (B, C, H, W) working-dtype images.
        y: (B,) labels (targets when plan.targeted).
    Returns:
        (x_adv (B, C, H, W): per sample the first fooling iterate, else the last one;
         fooled (B,) bool).
    """
    out = torch.empty_like(x)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    active = torch.arange(x.shape[0], device=x.device)  # rows of the batch still being attacked
    x_adv, x_ref, y_ref = start(x, plan), x, y
    bad = torch.zeros((), dtype=torch.bool, device=x.device)
    for t in range(plan.steps + 1):
        last = t == plan.steps
        x_adv.requires_grad_(not last)
        with torch.set_grad_enabled(not last), autocast(x_adv, plan.amp):
            logits = obj.model(x_adv)
            loss = None if last else obj.from_logits(logits)
        hit = fooled_by(logits.detach(), y_ref, plan.targeted)
        hit_rows = hit.nonzero().squeeze(1)  # the one host sync per step
        x_cur = x_adv.detach()
        if hit_rows.numel():
            out[active[hit_rows]] = x_cur[hit_rows]
            fooled[active[hit_rows]] = True
        keep = (~hit).nonzero().squeeze(1)
        if last or keep.numel() == 0:
            out[active[keep]] = x_cur[keep]
            break
        total = loss.sum()
        (g,) = torch.autograd.grad(-total if plan.targeted else total, x_adv)
        g, bad_g = clean_grad(g)
        bad = bad | bad_g
        x_adv = step(x_cur, g, x_ref, plan)
        if hit_rows.numel():
            active, x_adv, x_ref, y_ref = active[keep], x_adv[keep], x_ref[keep], y_ref[keep]
            obj = obj.subset(keep)
    warn_nonfinite(bad)
    return out, fooled
