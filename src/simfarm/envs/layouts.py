"""Procedural, seeded 2-D layouts of wall segments for the ray-cast world.

Every env of a batch gets its own layout inside the square arena
``[0, ARENA] x [0, ARENA]`` (metres), always closed by its four sides.
Kinds:

- ``"box"``: the bare arena plus random short wall pieces ("clutter").
- ``"rooms"``: a cross of walls splits the arena into four rooms; every
  half-wall has a door; clutter fills the remaining wall budget.
- ``"maze"``: a ``g x g`` binary-tree maze (every cell opens north or east,
  so every cell is reachable); ``g`` is the largest grid whose walls fit the
  budget, and the rest of the budget splits the outer sides into pieces.

Each layout has exactly ``n_walls`` real segments, so compute cost scales
with what was asked for. Generation is vectorised over envs with numpy and
runs once, at construction. Each random quantity has its own stream derived
from ``(seed, quantity)``, and draws are made row by row, so env ``i``'s
layout depends only on the seed and ``i``: a batch of 64 envs holds the same
first 16 layouts as a batch of 16.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["ARENA", "LAYOUT_KINDS", "generate_layouts", "min_walls", "spawn_points", "wall_colours"]

#: Side of the square arena, in metres.
ARENA = 8.0
LAYOUT_KINDS = ("rooms", "maze", "box")
#: Width of a door in the "rooms" layout (the agent's diameter is 0.4 m).
DOOR = 1.2


def min_walls(kind: str) -> int:
    """Smallest ``n_walls`` a layout kind can be built with.

    Raises:
        ValueError: For an unknown kind.
    """
    if kind == "rooms":
        return 12
    if kind in ("maze", "box"):
        return 4
    raise ValueError(f"layout must be one of {', '.join(LAYOUT_KINDS)}, got {kind!r}")


def _stream(seed: int, quantity: str) -> np.random.Generator:
    """An independent generator for one quantity of one seed's layouts."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & (2**63 - 1), zlib.crc32(quantity.encode())]))


def _boundary() -> np.ndarray:
    s = ARENA
    return np.array([[0, 0, s, 0], [s, 0, s, s], [s, s, 0, s], [0, s, 0, 0]], dtype=np.float64)


def _clutter(n_envs: int, count: int, seed: int) -> np.ndarray:
    """``(n_envs, count, 4)`` short segments at random places and angles."""
    if count == 0:
        return np.zeros((n_envs, 0, 4))
    draws = _stream(seed, "clutter").random((n_envs, count, 4))
    centre = 1.0 + draws[..., :2] * (ARENA - 2.0)
    angle = draws[..., 2] * np.pi
    half = 0.5 * (0.6 + draws[..., 3] * 1.0)
    offset = np.stack([np.cos(angle), np.sin(angle)], -1) * half[..., None]
    return np.concatenate([centre - offset, centre + offset], -1)


def _rooms(n_envs: int, seed: int) -> np.ndarray:
    """``(n_envs, 8, 4)``: four half-walls from a random centre, each with a door."""
    centre = ARENA * (0.4 + 0.2 * _stream(seed, "rooms-centre").random((n_envs, 2)))
    cx, cy = centre[:, 0], centre[:, 1]
    zero, full = np.zeros(n_envs), np.full(n_envs, ARENA)
    # Half-walls as (start, end) points: left, right, bottom, top of the cross.
    starts = np.stack([np.stack([zero, cy], -1), np.stack([cx, cy], -1), np.stack([cx, zero], -1), np.stack([cx, cy], -1)], 1)
    ends = np.stack([np.stack([cx, cy], -1), np.stack([full, cy], -1), np.stack([cx, cy], -1), np.stack([cx, full], -1)], 1)
    length = np.linalg.norm(ends - starts, axis=-1)  # (n, 4), at least 0.4 * ARENA
    margin = 0.3
    door_at = margin + _stream(seed, "rooms-doors").random((n_envs, 4)) * (length - 2 * margin - DOOR)
    unit = (ends - starts) / length[..., None]
    door_start = starts + unit * door_at[..., None]
    door_end = door_start + unit * DOOR
    first = np.concatenate([starts, door_start], -1)
    second = np.concatenate([door_end, ends], -1)
    return np.concatenate([first, second], 1)


def _maze(n_envs: int, n_walls: int, seed: int) -> np.ndarray:
    """``(n_envs, n_walls, 4)``: a binary-tree maze plus the sides cut into pieces."""
    g = int(np.floor(np.sqrt(n_walls - 4))) + 1
    cell = ARENA / g
    inner: np.ndarray
    if g > 1:
        # Candidate interior edges: vertical ones east of (r, c) for c < g-1,
        # horizontal ones north of (r, c) for r < g-1.
        rows, cols = np.meshgrid(np.arange(g), np.arange(g - 1), indexing="ij")
        vertical = np.stack([(cols + 1) * cell, rows * cell, (cols + 1) * cell, (rows + 1) * cell], -1).reshape(-1, 4)
        rows_h, cols_h = np.meshgrid(np.arange(g - 1), np.arange(g), indexing="ij")
        horizontal = np.stack(
            [cols_h * cell, (rows_h + 1) * cell, (cols_h + 1) * cell, (rows_h + 1) * cell], -1
        ).reshape(-1, 4)
        candidates = np.concatenate([vertical, horizontal])  # (2 g (g-1), 4)
        # Binary tree: every cell but the top-right one opens north or east;
        # the top row can only open east, the right column only north.
        north = _stream(seed, "maze").random((n_envs, g, g)) < 0.5
        north[:, g - 1, :] = False
        north[:, :, g - 1] = True
        north[:, g - 1, g - 1] = False
        east = ~north
        east[:, g - 1, g - 1] = False
        keep_vertical = ~east[:, :, : g - 1].reshape(n_envs, -1)
        keep_horizontal = ~north[:, : g - 1, :].reshape(n_envs, -1)
        keep = np.concatenate([keep_vertical, keep_horizontal], 1)
        # Exactly (g-1)^2 edges stay in every maze; gather them in a fixed order.
        order = np.argsort(~keep, axis=1, kind="stable")[:, : (g - 1) ** 2]
        inner = candidates[order]
    else:
        inner = np.zeros((n_envs, 0, 4))
    pieces = n_walls - inner.shape[1]
    per_side = np.full(4, pieces // 4)
    per_side[: pieces % 4] += 1
    sides = []
    for (ax, ay, bx, by), k in zip(_boundary(), per_side, strict=True):
        f0 = np.arange(k) / k
        f1 = (np.arange(k) + 1) / k
        sides.append(np.stack([ax + (bx - ax) * f0, ay + (by - ay) * f0, ax + (bx - ax) * f1, ay + (by - ay) * f1], -1))
    outer = np.broadcast_to(np.concatenate(sides), (n_envs, pieces, 4))
    return np.concatenate([outer, inner], 1)


def generate_layouts(kind: str, n_envs: int, n_walls: int, seed: int) -> np.ndarray:
    """Wall segments of ``n_envs`` seeded layouts.

    Args:
        kind: One of :data:`LAYOUT_KINDS`.
        n_envs: Number of layouts.
        n_walls: Segments per layout (>= :func:`min_walls` of the kind).
        seed: Layout ``i`` depends only on ``(seed, i)``.

    Returns:
        ``float64 (n_envs, n_walls, 4)``: rows ``(ax, ay, bx, by)`` in metres.

    Raises:
        ValueError: For an unknown kind or too small a wall budget.
    """
    need = min_walls(kind)
    if isinstance(n_walls, bool) or not isinstance(n_walls, int | np.integer) or n_walls < need:
        raise ValueError(f"n_walls must be an integer >= {need} for layout {kind!r}, got {n_walls!r}")
    if kind == "maze":
        return _maze(n_envs, int(n_walls), seed)
    outer = np.broadcast_to(_boundary(), (n_envs, 4, 4))
    parts = [outer]
    if kind == "rooms":
        parts.append(_rooms(n_envs, seed))
    used = sum(p.shape[1] for p in parts)
    parts.append(_clutter(n_envs, int(n_walls) - used, seed))
    return np.ascontiguousarray(np.concatenate(parts, 1))


def wall_colours(n_envs: int, n_walls: int, seed: int) -> np.ndarray:
    """``float64 (n_envs, n_walls, 3)`` RGB in [0, 1]: muted random colours per wall.

    Env ``i``'s colours depend only on ``(seed, i)``.
    """
    hue = _stream(seed, "colours").random((n_envs, n_walls))
    # A cheap HSV-like wheel with fixed saturation and value.
    phase = hue[..., None] * 2 * np.pi + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    return 0.55 + 0.35 * np.cos(phase)


def spawn_points(walls: np.ndarray, count: int, clearance: float, seed: int, chunk: int = 1024) -> np.ndarray:
    """Free points of each layout where a disc of radius ``clearance`` fits.

    Draws 8 candidates per wanted point uniformly in the arena, keeps those
    farther than ``clearance`` from every wall, in random order, and cycles
    through them when fewer than ``count`` are free.

    Args:
        walls: ``(n_envs, W, 4)`` from :func:`generate_layouts`.
        count: Points per env.
        clearance: Minimum distance to any wall.
        seed: Points of env ``i`` depend only on ``(seed, i)`` and its walls.
        chunk: Envs per vectorised block (bounds memory).

    Returns:
        ``float64 (n_envs, count, 2)``.

    Raises:
        ValueError: When some layout has no free point at all.
    """
    n_envs = walls.shape[0]
    n_candidates = 8 * count
    draws = _stream(seed, "spawns").random((n_envs, n_candidates, 3))
    candidates = clearance + draws[..., :2] * (ARENA - 2 * clearance)
    free = np.empty((n_envs, n_candidates), dtype=bool)
    for start in range(0, n_envs, chunk):  # blocks of envs, for memory only
        block = slice(start, start + chunk)
        a = walls[block, None, :, 0:2]
        e = walls[block, None, :, 2:4] - a
        rel = candidates[block, :, None, :] - a
        t = np.clip((rel * e).sum(-1) / np.maximum((e * e).sum(-1), 1e-12), 0.0, 1.0)
        distance = np.linalg.norm(rel - t[..., None] * e, axis=-1).min(-1)
        free[block] = distance > clearance
    n_free = free.sum(1)
    if np.any(n_free == 0):
        bad = int(np.argmin(n_free))
        raise ValueError(
            f"layout of env {bad} has no free spot for the agent; use fewer walls or another layout"
        )
    # Free candidates first, in the random order of their tie-break draw.
    order = np.argsort(np.where(free, draws[..., 2], 2.0), axis=1, kind="stable")
    slot = np.arange(count)[None, :] % n_free[:, None]
    picked = np.take_along_axis(order, slot, axis=1)
    return np.take_along_axis(candidates, picked[..., None], axis=1)
