"""Ray-cast world: ray geometry, collisions, seeded layouts, tasks, rendering."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simfarm.envs import RayCast, make
from simfarm.envs.geometry import cast_rays, point_segment_distance, sweep_disc
from simfarm.envs.layouts import ARENA, generate_layouts, spawn_points
from simfarm.envs.raycast import AGENT_RADIUS, MAX_DEPTH

NOOP, FORWARD, BACK, STRAFE_LEFT, STRAFE_RIGHT, TURN_LEFT, TURN_RIGHT = range(7)


def _one_wall_env(n_envs: int = 4, **kwargs) -> RayCast:
    """Envs whose every segment is the same vertical wall x = 6 (duplicates are harmless)."""
    env = RayCast(n_envs, device="cpu", dtype=torch.float64, layout="box", n_walls=4, **kwargs)
    env.reset()
    env.walls = torch.tensor([6.0, 0.0, 6.0, 8.0], dtype=torch.float64).expand(n_envs, 4, 4).clone()
    return env


def _place(env: RayCast, x: float, y: float, heading: float) -> torch.Tensor:
    env.position = torch.tensor([[x, y]], dtype=env.dtype).expand(env.n_envs, 2).clone()
    env.heading = torch.full((env.n_envs,), heading, dtype=env.dtype)
    env.visited = torch.zeros_like(env.visited)
    obs, *_ = env.step(torch.full((env.n_envs,), NOOP))
    return obs


@pytest.mark.parametrize("distance", [0.5, 1.25, 3.0, 5.5])
def test_a_ray_facing_a_wall_at_distance_d_reports_d(distance):
    env = _one_wall_env(res=5, fov=60.0)
    obs = _place(env, 6.0 - distance, 4.0, 0.0)
    depth = obs[:, env.obs_slices["depth"]] * MAX_DEPTH
    # The centre ray looks straight at the wall; the others hit it at an angle.
    torch.testing.assert_close(depth[:, 2], torch.full((4,), distance, dtype=torch.float64))
    offsets = env.ray_offsets.double()
    torch.testing.assert_close(depth[0], distance / torch.cos(offsets))


def test_cast_rays_handles_misses_parallel_rays_and_picks_the_nearest_wall():
    walls = torch.tensor([[[2.0, -1.0, 2.0, 1.0], [5.0, -1.0, 5.0, 1.0], [0.0, 3.0, 4.0, 3.0]]])
    directions = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    origins = torch.tensor([[0.0, 0.0]])
    distance, wall = cast_rays(origins, directions, walls)
    assert distance[0, 0] == pytest.approx(2.0) and wall[0, 0] == 0  # nearer of two walls
    assert math.isinf(distance[0, 1])  # nothing behind
    assert distance[0, 2] == pytest.approx(3.0) and wall[0, 2] == 2
    parallel = torch.tensor([[[0.0, 0.0, 4.0, 0.0]]])  # collinear with the ray
    assert math.isinf(cast_rays(origins, directions[:, :1], parallel)[0][0, 0])


def test_an_agent_cannot_pass_through_a_wall():
    env = _one_wall_env()
    _place(env, 4.0, 4.0, 0.0)
    for _ in range(30):  # walk into the wall much farther than the gap
        _, _, _, _, info = env.step(torch.full((4,), FORWARD))
    x = env.position[:, 0]
    assert torch.all(x <= 6.0 - AGENT_RADIUS + 1e-9)
    assert torch.all(x > 6.0 - AGENT_RADIUS - 0.01)  # it got right up to it
    assert torch.all(info["progress"] == 0.0)
    # Backing away is free again.
    env.step(torch.full((4,), BACK))
    assert torch.all(env.progress == 1.0)


def test_random_walks_never_overlap_walls_in_any_layout():
    for layout in ("rooms", "maze", "box"):
        env = make("raycast", 64, device="cpu", layout=layout, n_walls=24, seed=3)
        env.reset()
        generator = torch.Generator().manual_seed(1)
        for _ in range(150):
            env.step(torch.randint(0, 7, (64,), generator=generator))
            clearance = point_segment_distance(env.position.unsqueeze(1), env.walls).amin((1, 2))
            assert torch.all(clearance >= AGENT_RADIUS - 1e-4), layout
            assert torch.all((env.position > 0) & (env.position < ARENA))


def test_sweep_stops_at_end_caps_and_allows_sliding_along_a_wall():
    walls = torch.tensor([[[0.0, 0.0, 0.0, 2.0]]]).expand(3, 1, 4)
    position = torch.tensor([[-1.0, 3.0], [-1.0, 1.0], [-0.5, 1.0]])
    motion = torch.tensor([[1.0, -1.0], [0.0, 0.0], [0.0, 0.5]])
    progress = sweep_disc(position, motion, walls, radius=0.5)
    # Heading at the end cap (0, 2): the centre stops 0.5 from it, a little before.
    hit = position[0] + progress[0] * motion[0]
    assert torch.linalg.vector_norm(hit - torch.tensor([0.0, 2.0])) == pytest.approx(0.5, abs=2e-3)
    assert progress[1] == 1.0  # standing still
    assert progress[2] == 1.0  # touching and moving parallel


def test_layouts_are_seeded_reproducible_and_independent_of_batch_size():
    for kind in ("rooms", "maze", "box"):
        a = generate_layouts(kind, 16, 24, seed=5)
        b = generate_layouts(kind, 16, 24, seed=5)
        c = generate_layouts(kind, 16, 24, seed=6)
        big = generate_layouts(kind, 64, 24, seed=5)
        assert a.shape == (16, 24, 4)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, big[:16])
        assert not np.array_equal(a, c)
        assert np.all((a >= 0) & (a <= ARENA))
    env_a = make("raycast", 8, device="cpu", seed=9)
    env_b = make("raycast", 8, device="cpu", seed=9)
    assert torch.equal(env_a.walls, env_b.walls) and torch.equal(env_a.spawns, env_b.spawns)
    assert torch.equal(env_a.reset(), env_b.reset())


def test_maze_is_a_connected_binary_tree_maze():
    walls = generate_layouts("maze", 4, 13, seed=2)  # g = 4: 9 inner walls, 4 outer pieces
    for layout in walls:
        inner = [w for w in layout if not (np.all(w[[0, 2]] % ARENA == 0) and w[0] == w[2] or np.all(w[[1, 3]] % ARENA == 0) and w[1] == w[3])]
        assert len(inner) == 9
    # Flood fill over cells through the gaps: every cell is reachable.
    g, cell = 4, ARENA / 4
    for layout in walls:
        blocked = {tuple(np.round(w, 6)) for w in layout}
        seen, todo = {(0, 0)}, [(0, 0)]
        while todo:
            r, c = todo.pop()
            steps = {
                (r, c + 1): ((c + 1) * cell, r * cell, (c + 1) * cell, (r + 1) * cell),
                (r, c - 1): (c * cell, r * cell, c * cell, (r + 1) * cell),
                (r + 1, c): (c * cell, (r + 1) * cell, (c + 1) * cell, (r + 1) * cell),
                (r - 1, c): (c * cell, r * cell, (c + 1) * cell, r * cell),
            }
            for (nr, nc), edge in steps.items():
                if 0 <= nr < g and 0 <= nc < g and (nr, nc) not in seen and tuple(np.round(edge, 6)) not in blocked:
                    seen.add((nr, nc))
                    todo.append((nr, nc))
        assert len(seen) == g * g


def test_spawn_points_are_free_and_too_dense_layouts_are_rejected():
    walls = generate_layouts("rooms", 8, 40, seed=1)
    points = spawn_points(walls, 32, 0.25, seed=1)
    distance = point_segment_distance(torch.from_numpy(points), torch.from_numpy(walls))
    assert torch.all(distance > 0.25)
    crowded = np.tile(np.array([[0.0, y, ARENA, y] for y in np.arange(0.1, ARENA, 0.2)]), (2, 1, 1))
    with pytest.raises(ValueError, match="no free spot"):
        spawn_points(crowded, 8, 0.25, seed=0)


def test_explore_rewards_each_new_cell_once():
    env = _one_wall_env(n_envs=1, task="explore")
    _place(env, 1.5, 1.5, 0.0)
    rewards = []
    for action in [FORWARD] * 4 + [BACK] * 4:  # 1.2 m forth and back over cells x=1 and x=2
        rewards.append(float(env.step(torch.tensor([action]))[1][0]))
    assert sum(rewards) == 1.0  # one new cell (x = 2), the way back is known ground
    assert env.visited[0].sum() == 2


def test_point_goal_shapes_by_distance_and_terminates_on_arrival():
    env = _one_wall_env(n_envs=1, task="point-goal")
    env.goal = torch.tensor([[4.0, 4.0]], dtype=torch.float64)
    obs = _place(env, 2.6, 4.0, math.pi / 2)
    goal_features = obs[0, env.obs_slices["goal"]] * ARENA  # goal ahead, left, distance
    torch.testing.assert_close(goal_features, torch.tensor([0.0, -1.4, 1.4], dtype=torch.float64))
    env.heading = torch.zeros(1, dtype=torch.float64)
    _, reward, terminated, _, info = env.step(torch.tensor([FORWARD]))
    assert float(reward[0]) == pytest.approx(0.3 - 0.01)
    for _ in range(3):
        _, reward, terminated, _, info = env.step(torch.tensor([FORWARD]))
    assert bool(terminated[0]) and bool(info["success"][0])
    assert float(reward[0]) == pytest.approx(0.3 - 0.01 + 10.0)
    _, reward, terminated, truncated, _ = env.step(torch.tensor([FORWARD]))  # reset step
    assert float(reward[0]) == 0.0 and not terminated[0] and not truncated[0]


def test_observation_layout_and_rgb():
    env = make("raycast", 4, device="cpu", task="point-goal", rgb=True, res=32)
    obs = env.reset()
    assert obs.shape == (4, 32 * 4 + 3) == (4, *env.observation_shape)
    rgb = obs[:, env.obs_slices["rgb"]]
    assert torch.all((rgb >= 0) & (rgb <= 1))
    assert torch.all((obs[:, env.obs_slices["depth"]] > 0) & (obs[:, env.obs_slices["depth"]] <= 1))


def test_render_top_down_and_strip_and_episode_drawing_agree():
    env = make("raycast", 3, device="cpu", task="explore", seed=2)
    env.reset()
    generator = torch.Generator().manual_seed(0)
    states = [env.capture_state()[1]]
    for _ in range(12):
        env.step(torch.randint(0, 7, (3,), generator=generator))
        states.append(env.capture_state()[1])
    frames = env.render([0, 1])
    assert frames.shape == (2, *env.render_shape, 3) and frames.dtype == torch.uint8
    episode = env.draw_episode(1, torch.stack(states))
    assert episode.shape == (13, *env.render_shape, 3)
    # The last frame of the episode is the env's present, visited cells included.
    assert torch.equal(episode[-1], frames[1])
    assert not torch.equal(episode[0], episode[-1])


def test_bad_options_are_rejected_with_clear_messages():
    with pytest.raises(ValueError, match="task must be one of"):
        RayCast(2, device="cpu", task="fetch")
    with pytest.raises(ValueError, match="n_walls must be an integer >= 12"):
        RayCast(2, device="cpu", layout="rooms", n_walls=8)
    with pytest.raises(ValueError, match="res must be"):
        RayCast(2, device="cpu", res=0)


def test_ray_casting_in_blocks_of_envs_gives_the_same_answer():
    env = make("raycast", 37, device="cpu", n_walls=20, seed=8)
    env.reset()
    angles = env.heading.unsqueeze(1) + env.ray_offsets
    directions = torch.stack((torch.cos(angles), torch.sin(angles)), -1)
    whole = cast_rays(env.position, directions, env.walls, chunk_elements=1 << 30)
    blocks = cast_rays(env.position, directions, env.walls, chunk_elements=5 * 64 * 20)  # 5 envs a block
    assert torch.equal(whole[0], blocks[0]) and torch.equal(whole[1], blocks[1])
