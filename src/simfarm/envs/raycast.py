"""A megastep-style world: 2-D rooms of wall segments seen through 1-D ray casts.

Each env is a square arena (:data:`~simfarm.envs.layouts.ARENA` metres)
with its own seeded layout of ``n_walls`` segments (rooms, maze or box; see
:mod:`simfarm.envs.layouts`). One agent per env is a disc with a position
and a heading. Seven discrete actions: noop, forward, back, strafe left,
strafe right, turn left, turn right. Moves stop at the first wall contact;
the fraction of the move achieved is ``info["progress"]`` (below 1 means a
collision).

Observations are a flat vector per env: the 1-D depth image of ``res``
pixels across the field of view (distance / max depth, 1 = nothing within
range), then with ``rgb=True`` the matching RGB strip (``3 * res``, the hit
wall's colour dimmed with distance), then for ``point-goal`` the goal in the
agent's frame (forward, left, distance; divided by the arena size).
:attr:`RayCast.obs_slices` names the parts. Every ray is tested against every
wall of its env in one batched tensor operation (envs x rays x walls).

Tasks:

- ``explore``: the arena is cut into 1 m cells; reward 1 for each cell
  entered for the first time in the episode. Episodes end by truncation;
  one counts as a success when it visited at least ``explore_target`` of the
  cells.
- ``point-goal``: reach a goal disc; reward is the decrease of the distance
  to the goal each step, minus 0.01 per step, plus 10 on arrival, which
  terminates (and is a success).

Spawn and goal points are drawn from 32 precomputed free points per layout,
so a reset needs no search and no host synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from simfarm.envs.base import BatchedEnv, StepResult
from simfarm.envs.drawing import PixelGrid, disc_mask, paint, palette_image, segment_distance
from simfarm.envs.geometry import cast_rays, sweep_disc
from simfarm.envs.layouts import ARENA, LAYOUT_KINDS, generate_layouts, spawn_points, wall_colours

__all__ = ["TASKS", "RayCast"]

TASKS = ("explore", "point-goal")
AGENT_RADIUS = 0.2
MOVE_STEP = 0.3  # metres per forward/back/strafe step
TURN_STEP = math.radians(15.0)
CELL = 1.0  # explore grid
GRID = int(ARENA / CELL)
GOAL_RADIUS = 0.5
GOAL_BONUS = 10.0
STEP_COST = 0.01
SPAWNS = 32
MAX_DEPTH = ARENA * math.sqrt(2.0)
#: Per action: (forward, left, turn) in units of MOVE_STEP and TURN_STEP.
MOVES = ((0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
STRIP_HEIGHT = 18
SEPARATOR = 2


class RayCast(BatchedEnv):
    """Batched ray-cast world; see the module docstring.

    Args:
        n_envs: Batch size.
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"``.
        seed: Seeds layouts, spawn points, colours and the reset stream.
        dtype: ``torch.float32`` or ``torch.float64``.
        task: ``"explore"`` or ``"point-goal"``.
        res: Rays (pixels) per observation, 1 to 1024.
        n_walls: Wall segments per env.
        layout: ``"rooms"``, ``"maze"`` or ``"box"``.
        fov: Field of view in degrees, in (0, 360).
        max_episode_steps: Truncation length.
        rgb: Add the RGB strip to observations.
        explore_target: Fraction of cells an explore episode must visit to
            count as a success.
        compile: Run the step through ``torch.compile``.
        render_size: Side of the top-down map in pixels (the frame adds the
            1-D view strip below it).

    Raises:
        ValueError: For an unknown task or layout, or out-of-range sizes.

    Attributes:
        walls: ``(n_envs, n_walls, 4)`` segments (static).
        wall_rgb: ``(n_envs, n_walls, 3)`` wall colours in [0, 1].
        spawns: ``(n_envs, 32, 2)`` free points used for spawns and goals.
        position, heading, goal: Agent and goal state tensors.
        visited: ``(n_envs, cells)`` 1.0 for cells visited this episode.
        progress: ``(n_envs,)`` fraction of the last move achieved.
    """

    name = "raycast"
    action_names = ("noop", "forward", "back", "strafe-left", "strafe-right", "turn-left", "turn-right")
    render_fps = 10.0
    reward_threshold = None

    def __init__(
        self,
        n_envs: int,
        *,
        device: str | torch.device = "auto",
        seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
        task: str = "explore",
        res: int = 64,
        n_walls: int = 16,
        layout: str = "rooms",
        fov: float = 120.0,
        max_episode_steps: int = 200,
        rgb: bool = False,
        explore_target: float = 0.3,
        compile: bool = False,
        render_size: int = 128,
    ) -> None:
        super().__init__(n_envs, device=device, seed=seed, dtype=dtype, max_episode_steps=max_episode_steps)
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        if layout not in LAYOUT_KINDS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUT_KINDS)}, got {layout!r}")
        if isinstance(res, bool) or not isinstance(res, int) or not 1 <= res <= 1024:
            raise ValueError(f"res must be an integer from 1 to 1024, got {res!r}")
        if not 0.0 < float(fov) < 360.0:
            raise ValueError(f"fov must be in (0, 360) degrees, got {fov!r}")
        if not 0.0 < float(explore_target) <= 1.0:
            raise ValueError(f"explore_target must be in (0, 1], got {explore_target!r}")
        if isinstance(render_size, bool) or not isinstance(render_size, int) or render_size < 32:
            raise ValueError(f"render_size must be an integer >= 32, got {render_size!r}")
        self.task, self.layout, self.res, self.fov = task, layout, int(res), float(fov)
        self.rgb, self.explore_target, self.render_size = bool(rgb), float(explore_target), render_size
        self.compiled = bool(compile)

        walls = generate_layouts(layout, self.n_envs, n_walls, self.seed)
        self.n_walls = walls.shape[1]
        self.walls = self._tensor(walls)
        self.wall_rgb = self._tensor(wall_colours(self.n_envs, self.n_walls, self.seed))
        self.spawns = self._tensor(spawn_points(walls, SPAWNS, AGENT_RADIUS + 0.05, self.seed))
        # Ray angles relative to the heading: pixel 0 looks furthest left.
        fov_rad = math.radians(self.fov)
        self.ray_offsets = fov_rad / 2 - (torch.arange(self.res, dtype=self.dtype, device=self.device) + 0.5) * (
            fov_rad / self.res
        )
        self.moves = torch.tensor(MOVES, dtype=self.dtype, device=self.device) * torch.tensor(
            [MOVE_STEP, MOVE_STEP, TURN_STEP], dtype=self.dtype, device=self.device
        )

        n = self.n_envs
        self.position = torch.zeros(n, 2, dtype=self.dtype, device=self.device)
        self.heading = torch.zeros(n, dtype=self.dtype, device=self.device)
        self.goal = torch.zeros(n, 2, dtype=self.dtype, device=self.device)
        self.visited = torch.zeros(n, GRID * GRID, dtype=self.dtype, device=self.device)
        self.goal_distance = torch.zeros(n, dtype=self.dtype, device=self.device)
        self.progress = torch.ones(n, dtype=self.dtype, device=self.device)
        self._obs = torch.zeros(n, *self.observation_shape, dtype=self.dtype, device=self.device)
        kernel = self._make_kernel()
        self._kernel: Callable[..., tuple[torch.Tensor, ...]] = (
            torch.compile(kernel, dynamic=False) if compile else kernel
        )
        self._setup_drawing()

    def _tensor(self, array: Any) -> torch.Tensor:
        return torch.as_tensor(array, dtype=self.dtype, device=self.device)

    # -- metadata -------------------------------------------------------------
    @property
    def obs_slices(self) -> dict[str, slice]:
        """Where each part lies in an observation: ``depth``, ``rgb``, ``goal``."""
        out = {"depth": slice(0, self.res)}
        end = self.res
        if self.rgb:
            out["rgb"] = slice(end, end + 3 * self.res)
            end += 3 * self.res
        if self.task == "point-goal":
            out["goal"] = slice(end, end + 3)
        return out

    @property
    def observation_shape(self) -> tuple[int, ...]:
        """``(res [+ 3 res] [+ 3],)``; see :attr:`obs_slices`."""
        return (self.res * (4 if self.rgb else 1) + (3 if self.task == "point-goal" else 0),)

    @property
    def observation_bounds(self) -> tuple[float, float]:
        """Depth and colour lie in [0, 1]; goal coordinates in about [-1.5, 1.5]."""
        return (-1.5, 1.5) if self.task == "point-goal" else (0.0, 1.0)

    @property
    def render_shape(self) -> tuple[int, int]:
        """(map + separator + strip height, map width)."""
        return (self.render_size + SEPARATOR + STRIP_HEIGHT, self.render_size)

    def describe(self) -> dict[str, Any]:
        """Name, sizes, task and layout parameters."""
        return {
            **super().describe(),
            "task": self.task,
            "layout": self.layout,
            "res": self.res,
            "n_walls": self.n_walls,
            "fov": self.fov,
            "rgb": self.rgb,
            "compiled": self.compiled,
        }

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "position": self.position,
            "heading": self.heading,
            "goal": self.goal,
            "visited": self.visited,
            "goal_distance": self.goal_distance,
            "progress": self.progress,
            "obs": self._obs,
        }

    # -- resets -----------------------------------------------------------------
    def _draw_reset_pool(self) -> dict[str, torch.Tensor]:
        n, g = self.n_envs, self.generator
        spawn = torch.randint(0, SPAWNS, (n,), generator=g, device=self.device)
        # A different spawn point for the goal: offset by 1..SPAWNS-1.
        goal = (spawn + torch.randint(1, SPAWNS, (n,), generator=g, device=self.device)) % SPAWNS
        heading = torch.empty(n, dtype=self.dtype, device=self.device).uniform_(-math.pi, math.pi, generator=g)
        rows = torch.arange(n, device=self.device)
        return {"position": self.spawns[rows, spawn], "heading": heading, "goal": self.spawns[rows, goal]}

    def _reset_all(self) -> None:
        # A full reset is one step in which every env takes its reset branch.
        self._done = torch.ones_like(self._done)
        self._step(torch.zeros(self.n_envs, dtype=torch.int64, device=self.device), self._draw_reset_pool())

    # -- dynamics ---------------------------------------------------------------
    def _make_kernel(self) -> Callable[..., tuple[torch.Tensor, ...]]:
        """The pure step function for this env's constants (compiled as a whole)."""
        task, max_steps, target = self.task, float(self.max_episode_steps), self.explore_target
        moves, offsets = self.moves, self.ray_offsets
        rgb = self.rgb

        def kernel(
            position: torch.Tensor,
            heading: torch.Tensor,
            goal: torch.Tensor,
            visited: torch.Tensor,
            goal_distance: torch.Tensor,
            elapsed: torch.Tensor,
            done: torch.Tensor,
            actions: torch.Tensor,
            spawn_position: torch.Tensor,
            spawn_heading: torch.Tensor,
            spawn_goal: torch.Tensor,
            walls: torch.Tensor,
            wall_rgb: torch.Tensor,
        ) -> tuple[torch.Tensor, ...]:
            """Move, autoreset, reward and observe every env; no host sync."""
            move = moves[actions.clamp(0, len(MOVES) - 1)]
            new_heading = heading + move[:, 2]
            forward = torch.stack((torch.cos(new_heading), torch.sin(new_heading)), 1)
            left = torch.stack((-forward[:, 1], forward[:, 0]), 1)
            motion = forward * move[:, 0:1] + left * move[:, 1:2]
            progress = sweep_disc(position, motion, walls, AGENT_RADIUS)
            moved = position + motion * progress.unsqueeze(1)
            resetting = done > 0.5
            keep = 1.0 - done
            position = torch.where(resetting.unsqueeze(1), spawn_position, moved)
            heading = torch.where(resetting, spawn_heading, torch.remainder(new_heading + math.pi, 2 * math.pi) - math.pi)
            goal = torch.where(resetting.unsqueeze(1), spawn_goal, goal)
            progress = torch.where(resetting, torch.ones_like(progress), progress)

            cell_xy = torch.floor(position / CELL).clamp(0, GRID - 1)
            cell = (cell_xy[:, 0] + GRID * cell_xy[:, 1]).long().unsqueeze(1)
            visited = visited * keep.unsqueeze(1)
            first_visit = 1.0 - visited.gather(1, cell).squeeze(1)
            visited = visited.scatter(1, cell, 1.0)
            new_distance = torch.linalg.vector_norm(goal - position, dim=1)
            if task == "explore":
                reward = first_visit * keep
                terminated = torch.zeros_like(reward)
            else:
                terminated = (new_distance < GOAL_RADIUS).to(position.dtype) * keep
                reward = (goal_distance - new_distance - STEP_COST + GOAL_BONUS * terminated) * keep
            elapsed = (elapsed + 1.0) * keep
            truncated = (elapsed >= max_steps).to(position.dtype)
            new_done = torch.maximum(terminated, truncated)
            if task == "explore":
                covered = (visited.mean(1) >= target).to(position.dtype)
                success = new_done * covered
            else:
                success = terminated

            # Observation: depth (and colour) along each ray, then the goal.
            angles = heading.unsqueeze(1) + offsets
            directions = torch.stack((torch.cos(angles), torch.sin(angles)), -1)
            distance, wall = cast_rays(position, directions, walls)
            depth = (distance / MAX_DEPTH).clamp(max=1.0)
            parts = [depth]
            if rgb:
                colour = wall_rgb.gather(1, wall.unsqueeze(-1).expand(-1, -1, 3))
                parts.append((colour * (1.0 - 0.6 * depth).unsqueeze(-1)).flatten(1))
            if task == "point-goal":
                rel = goal - position
                cos_h, sin_h = torch.cos(heading), torch.sin(heading)
                ahead = rel[:, 0] * cos_h + rel[:, 1] * sin_h
                leftward = rel[:, 1] * cos_h - rel[:, 0] * sin_h
                parts.append(torch.stack((ahead, leftward, new_distance), 1) / ARENA)
            obs = torch.cat(parts, 1) if len(parts) > 1 else depth
            return (
                position, heading, goal, visited, new_distance, elapsed, new_done,
                reward, terminated, truncated, success, progress, obs,
            )

        return kernel

    def _step(self, actions: torch.Tensor, pool: dict[str, torch.Tensor]) -> StepResult:
        (
            self.position, self.heading, self.goal, self.visited, self.goal_distance,
            self._elapsed, self._done, reward, terminated, truncated, success, self.progress, self._obs,
        ) = self._kernel(
            self.position, self.heading, self.goal, self.visited, self.goal_distance,
            self._elapsed, self._done, actions, pool["position"], pool["heading"], pool["goal"],
            self.walls, self.wall_rgb,
        )
        info = {"success": success.bool(), "progress": self.progress}
        return self._obs, reward, terminated.bool(), truncated.bool(), info

    def observe(self) -> torch.Tensor:
        """``(n_envs, obs_dim)`` current observations."""
        return self._obs

    # -- pictures ---------------------------------------------------------------
    def capture_state(self) -> torch.Tensor:
        """``(n_envs, 5)``: x, y, heading, goal x, goal y."""
        # Built feature-major and viewed transposed: the recorder gathers it feature-major.
        return torch.cat((self.position.T, self.heading.unsqueeze(0), self.goal.T), 0).T

    def _setup_drawing(self) -> None:
        size = self.render_size
        self._grid = PixelGrid(size, size, self.device, self.dtype)
        self._pixels_per_metre = size / ARENA
        # World coordinates of every pixel centre, (1, size, size) each.
        self._world_x = self._grid.xs.expand(1, size, size) / self._pixels_per_metre
        self._world_y = ARENA - self._grid.ys.expand(1, size, size) / self._pixels_per_metre
        cell_x = torch.floor(self._world_x / CELL).clamp(0, GRID - 1)
        cell_y = torch.floor(self._world_y / CELL).clamp(0, GRID - 1)
        self._pixel_cell = (cell_x + GRID * cell_y).long().reshape(-1)
        self._palette = torch.tensor(
            [
                [236, 236, 230],  # floor
                [200, 222, 200],  # visited cell
                [250, 238, 170],  # field of view
                [235, 120, 110],  # goal
                [60, 60, 70],  # wall
                [50, 110, 200],  # agent
                [250, 250, 250],  # heading
            ],
            dtype=torch.uint8,
            device=self.device,
        )

    def _render(self, env_ids: torch.Tensor) -> torch.Tensor:
        states = self.capture_state()[env_ids]
        return self._draw(self.walls[env_ids], self.wall_rgb[env_ids], states, self.visited[env_ids])

    def draw_episode(self, env_id: int, states: torch.Tensor) -> torch.Tensor:
        """Frames of env ``env_id`` along ``(T, 5)`` captured states (visited cells rebuilt from the path)."""
        states = states.to(self.device, self.dtype)
        cells = torch.floor(states[:, 0:2] / CELL).clamp(0, GRID - 1)
        index = (cells[:, 0] + GRID * cells[:, 1]).long()
        seen = torch.nn.functional.one_hot(index, GRID * GRID).to(self.dtype)
        visited = torch.cummax(seen, 0).values
        frames = states.shape[0]
        return self._draw(
            self.walls[env_id].expand(frames, -1, -1),
            self.wall_rgb[env_id].expand(frames, -1, -1),
            states,
            visited,
        )

    def _draw(self, walls: torch.Tensor, wall_rgb: torch.Tensor, states: torch.Tensor, visited: torch.Tensor) -> torch.Tensor:
        """``uint8 (k, H, W, 3)``: top-down map over the agent's 1-D view."""
        k, size, scale = states.shape[0], self.render_size, self._pixels_per_metre
        position, heading, goal = states[:, 0:2], states[:, 2], states[:, 3:5]
        angles = heading.unsqueeze(1) + self.ray_offsets
        directions = torch.stack((torch.cos(angles), torch.sin(angles)), -1)
        distance, wall = cast_rays(position, directions, walls.contiguous())
        distance = distance.clamp(max=MAX_DEPTH)

        labels = torch.zeros((k, size, size), dtype=torch.uint8, device=self.device)
        if self.task == "explore":
            labels = paint(labels, visited[:, self._pixel_cell].view(k, size, size) > 0.5, 1)
        # Field of view: pixels within the fov and nearer than their ray's hit.
        dx = self._world_x - position[:, 0].view(-1, 1, 1)
        dy = self._world_y - position[:, 1].view(-1, 1, 1)
        relative = torch.remainder(torch.atan2(dy, dx) - heading.view(-1, 1, 1) + math.pi, 2 * math.pi) - math.pi
        fov = math.radians(self.fov)
        ray = ((fov / 2 - relative) / fov * self.res).floor().clamp(0, self.res - 1).long()
        reach = torch.gather(distance, 1, ray.view(k, -1)).view(k, size, size)
        cone = (relative.abs() <= fov / 2) & (dx * dx + dy * dy <= reach * reach)
        labels = paint(labels, cone, 2)
        if self.task == "point-goal":
            goal_px = goal[:, 0] * scale, (ARENA - goal[:, 1]) * scale
            labels = paint(labels, disc_mask(self._grid, *goal_px, GOAL_RADIUS * scale), 3)
        # Walls: only distinct wall sets are rasterised (an episode shares one).
        unique, inverse = torch.unique(walls.reshape(k, -1), dim=0, return_inverse=True)
        unique = unique.view(-1, 1, 1, walls.shape[1], 4) * scale
        near = segment_distance(
            self._grid.xs.unsqueeze(-1), self._grid.ys.unsqueeze(-1),
            unique[..., 0], size - unique[..., 1], unique[..., 2], size - unique[..., 3],
        ).amin(-1)
        labels = paint(labels, (near <= max(1.0, 0.06 * scale))[inverse], 4)
        agent_px = position[:, 0] * scale, (ARENA - position[:, 1]) * scale
        labels = paint(labels, disc_mask(self._grid, *agent_px, AGENT_RADIUS * scale), 5)
        # Heading: a small light dot towards the front of the disc.
        nose_px = (
            agent_px[0] + torch.cos(heading) * 0.55 * AGENT_RADIUS * scale,
            agent_px[1] - torch.sin(heading) * 0.55 * AGENT_RADIUS * scale,
        )
        labels = paint(labels, disc_mask(self._grid, *nose_px, max(1.0, 0.3 * AGENT_RADIUS * scale)), 6)
        top = palette_image(labels, self._palette)

        # The agent's 1-D view, stretched to the frame width.
        column_ray = (torch.arange(size, device=self.device) * self.res) // size
        colour = wall_rgb.gather(1, wall.unsqueeze(-1).expand(-1, -1, 3))
        shade = (1.0 - 0.6 * distance / MAX_DEPTH).unsqueeze(-1)
        strip = (colour * shade * 255).clamp(0, 255).to(torch.uint8)[:, column_ray]
        strip = strip.unsqueeze(1).expand(k, STRIP_HEIGHT, size, 3)
        separator = torch.full((k, SEPARATOR, size, 3), 30, dtype=torch.uint8, device=self.device)
        return torch.cat((top, separator, strip), 1)
