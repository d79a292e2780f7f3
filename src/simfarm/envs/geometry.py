"""Batched 2-D geometry in torch: ray casting and swept-disc collisions.

Both work on a batch of envs at once, each with its own wall segments stored
as rows ``(ax, ay, bx, by)`` of a ``(B, W, 4)`` tensor. Nothing here loops in
Python over envs, rays or walls, and nothing synchronises with the device.
"""

from __future__ import annotations

import torch

__all__ = ["cast_rays", "point_segment_distance", "sweep_disc"]


def cast_rays(
    origins: torch.Tensor, directions: torch.Tensor, walls: torch.Tensor, chunk_elements: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance along each ray to the first wall it meets.

    For the ray ``o + t d`` and the segment ``a + s (b - a)`` the crossing
    solves two 2-D cross products; the ones that involve the ray direction
    are done for all (ray, wall) pairs with one batched matrix product.

    Args:
        origins: ``(B, 2)`` ray origins.
        directions: ``(B, R, 2)`` unit ray directions.
        walls: ``(B, W, 4)`` segments.
        chunk_elements: Envs are processed in blocks of about this many
            (env, ray, wall) triples, so that on a CPU the temporaries stay
            in cache instead of costing fresh memory every step (3x faster
            at 4096 envs x 64 rays x 64 walls). Default: 2**18 on a CPU,
            2**24 on a GPU, which wants large kernels.

    Returns:
        ``(distance, wall)``: ``(B, R)`` distances (``inf`` where a ray hits
        nothing) and the ``int64`` index of the wall hit (0 when none).
    """
    if chunk_elements is None:
        chunk_elements = 1 << 24 if origins.is_cuda else 1 << 18
    batch, pairs = origins.shape[0], directions.shape[1] * walls.shape[1]
    block = max(1, chunk_elements // max(pairs, 1))
    if batch <= block:
        return _cast_block(origins, directions, walls)
    parts = [
        _cast_block(origins[i : i + block], directions[i : i + block], walls[i : i + block])
        for i in range(0, batch, block)  # blocks of envs, not single envs
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _cast_block(
    origins: torch.Tensor, directions: torch.Tensor, walls: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    ax, ay, bx, by = walls.unbind(-1)
    ex, ey = bx - ax, by - ay
    wx, wy = ax - origins[:, 0:1], ay - origins[:, 1:2]
    # d x e (denominator) and w x d (numerator of s) for every ray and wall.
    rhs = torch.cat((torch.stack((ey, -ex), 1), torch.stack((-wy, wx), 1)), 2)  # (B, 2, 2W)
    products = torch.bmm(directions, rhs)
    n_walls = walls.shape[1]
    denominator, s_numerator = products[..., :n_walls], products[..., n_walls:]
    t_numerator = (wx * ey - wy * ex).unsqueeze(1)  # w x e, the same for every ray
    t = t_numerator / denominator
    s = s_numerator / denominator
    # Parallel rays give inf/nan here, which every comparison below rejects.
    hit = (t > 0) & (s >= 0) & (s <= 1)
    distance, wall = torch.where(hit, t, torch.full_like(t, float("inf"))).min(-1)
    return distance, wall


def point_segment_distance(points: torch.Tensor, walls: torch.Tensor) -> torch.Tensor:
    """Distance from points to segments.

    Args:
        points: ``(B, P, 2)``.
        walls: ``(B, W, 4)``.

    Returns:
        ``(B, P, W)`` Euclidean distances.
    """
    a = walls[:, None, :, 0:2]
    e = walls[:, None, :, 2:4] - a
    rel = points[:, :, None, :] - a
    length_sq = (e * e).sum(-1).clamp_min(1e-12)
    t = ((rel * e).sum(-1) / length_sq).clamp(0.0, 1.0)
    return torch.linalg.vector_norm(rel - t.unsqueeze(-1) * e, dim=-1)


def sweep_disc(
    position: torch.Tensor, motion: torch.Tensor, walls: torch.Tensor, radius: float, skin: float = 1e-3
) -> torch.Tensor:
    """How far a disc can move before touching a wall, as a fraction of the move.

    The disc of ``radius`` centred at ``position`` moves by ``motion``. It
    collides with a segment when its centre enters the segment's capsule
    (the segment grown by ``radius``): either crossing one of the two long
    sides or entering one of the two end caps. A disc already overlapping a
    wall (rounding) may move away from it but not further in.

    Args:
        position: ``(B, 2)`` disc centres.
        motion: ``(B, 2)`` intended displacements.
        walls: ``(B, W, 4)`` segments.
        radius: Disc radius.
        skin: Distance kept back from the contact point so that rounding
            never leaves the disc inside a wall.

    Returns:
        ``(B,)`` progress in ``[0, 1]``: 1 means the whole move is free
        (megastep calls this *progress*; below 1 means a collision).
    """
    px, py = position[:, 0:1], position[:, 1:2]
    vx, vy = motion[:, 0:1], motion[:, 1:2]
    ax, ay, bx, by = walls.unbind(-1)
    ex, ey = bx - ax, by - ay
    length = torch.sqrt(ex * ex + ey * ey).clamp_min(1e-9)
    tx, ty = ex / length, ey / length
    rx, ry = px - ax, py - ay
    speed_sq = (vx * vx + vy * vy).clamp_min(1e-18)
    inf = torch.full_like(rx, float("inf"))

    # Long sides: signed distance h to the wall's line and its rate of change.
    h0 = rx * ty - ry * tx
    hv = vx * ty - vy * tx
    side = torch.where(h0 >= 0, 1.0, -1.0).to(h0.dtype)
    approach = -side * hv
    gap = h0.abs() - radius
    t_side = gap / approach.clamp_min(1e-18)
    along = (rx + t_side * vx) * tx + (ry + t_side * vy) * ty
    side_hit = (gap >= 0) & (approach > 0) & (along >= 0) & (along <= length)
    first = torch.where(side_hit, t_side, inf)

    # End caps: the first root of |p + t v - c|^2 = r^2, entering from outside.
    for cx, cy in ((ax, ay), (bx, by)):
        wx, wy = px - cx, py - cy
        b_half = wx * vx + wy * vy
        c_term = wx * wx + wy * wy - radius * radius
        disc = b_half * b_half - speed_sq * c_term
        t_cap = (-b_half - torch.sqrt(disc.clamp_min(0.0))) / speed_sq
        cap_hit = (c_term >= 0) & (b_half < 0) & (disc >= 0)
        first = torch.minimum(first, torch.where(cap_hit, t_cap, inf))

    # Already overlapping (rounding): block any motion towards the wall.
    q = ((rx * tx + ry * ty) / length).clamp(0.0, 1.0)
    dx, dy = rx - q * ex, ry - q * ey
    overlapping = (dx * dx + dy * dy < radius * radius) & (dx * vx + dy * vy < 0)
    first = torch.where(overlapping, torch.zeros_like(first), first)

    t_hit = first.amin(-1)
    speed = torch.sqrt(speed_sq[:, 0])
    progress = (t_hit - skin / speed).clamp(0.0, 1.0)
    # Standing still (turning, noop) is never a collision.
    return torch.where(speed > 1e-9, progress, torch.ones_like(progress))
