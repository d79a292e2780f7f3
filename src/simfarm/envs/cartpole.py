"""CartPole-v1 as a batched torch environment, step for step equal to gymnasium's.

The dynamics, constants, Euler integrator, termination thresholds, the
500-step truncation and the ``NEXT_STEP`` autoreset are those of
gymnasium's ``CartPoleEnv`` / ``CartPoleVectorEnv``; with ``dtype=float64``
the next state agrees with gymnasium's to rounding (the tests check 1e-5
and identical termination flags over random states and whole episodes).

Differences from gymnasium, on purpose:

- Observations are the state itself in the env's dtype (gymnasium casts to
  float32).
- Reset noise comes from a torch generator, so the *initial states* differ
  from gymnasium's for the same seed; the distribution (uniform on
  [-0.05, 0.05) per component) is the same.

The state is stored as a ``(4, n_envs)`` tensor so each component is a
contiguous row; :attr:`CartPole.state` shows it as ``(n_envs, 4)`` like
gymnasium. One step is a single pure function, :func:`cartpole_kernel`,
which ``compile=True`` hands to ``torch.compile``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from simfarm.envs.base import BatchedEnv, StepResult
from simfarm.envs.drawing import PixelGrid, disc_mask, paint, palette_image

__all__ = ["CartPole", "cartpole_kernel", "cartpole_physics"]

# Physical constants of CartPole-v1 (SI units).
GRAVITY = 9.8
MASS_CART = 1.0
MASS_POLE = 0.1
TOTAL_MASS = MASS_CART + MASS_POLE
HALF_POLE_LENGTH = 0.5
POLE_MASS_LENGTH = MASS_POLE * HALF_POLE_LENGTH
FORCE_MAG = 10.0
TAU = 0.02
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4
RESET_LOW, RESET_HIGH = -0.05, 0.05
#: No episode started from the reset box can terminate in fewer steps: the
#: angle needs 8 Euler steps to leave +-12 degrees even under the largest
#: angular acceleration the dynamics allow (|thetaacc| < 18 rad/s^2 while
#: |theta| < 0.21). tests/envs checks it against the kernel from the worst
#: corners of the box. It lets one reset pool serve 9 steps.
MIN_EPISODE_STEPS = 8


def cartpole_physics(state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """gymnasium's CartPole equations and Euler step for every env.

    Args:
        state: ``(4, n)`` rows x, x_dot, theta, theta_dot.
        actions: ``(n,)`` 0 (push left) or 1 (push right), any numeric dtype.

    Returns:
        The ``(4, n)`` state one step later (a new tensor).
    """
    x_dot, theta, theta_dot = state[1], state[2], state[3]
    costheta = torch.cos(theta)
    sintheta = torch.sin(theta)
    # The equations of CartPoleEnv.step, regrouped into fused multiply-adds
    # (each eager op costs microseconds at 4096 envs):
    # temp = (force + ml * theta_dot**2 * sin) / M with force = +-FORCE_MAG.
    temp = (actions.to(state.dtype) * (2.0 * FORCE_MAG / TOTAL_MASS)).sub_(FORCE_MAG / TOTAL_MASS)
    temp = torch.addcmul(temp, theta_dot * theta_dot, sintheta, value=POLE_MASS_LENGTH / TOTAL_MASS)
    # thetaacc = (g sin - cos temp) / (l (4/3 - m cos**2 / M))
    denominator = (costheta * costheta).mul_(-HALF_POLE_LENGTH * MASS_POLE / TOTAL_MASS).add_(
        HALF_POLE_LENGTH * 4.0 / 3.0
    )
    thetaacc = torch.addcmul(sintheta * GRAVITY, costheta, temp, value=-1.0).div_(denominator)
    xacc = torch.addcmul(temp, thetaacc, costheta, value=-POLE_MASS_LENGTH / TOTAL_MASS)
    # Euler: positions move with the old velocities, velocities with the new accelerations.
    return torch.add(state, torch.stack((x_dot, xacc, theta_dot, thetaacc)), alpha=TAU)


def _fallen(state: torch.Tensor) -> torch.Tensor:
    """``bool (n,)``: cart off the track or pole past 12 degrees."""
    magnitude = state[0::2].abs()
    return (magnitude[0] > X_THRESHOLD) | (magnitude[1] > THETA_THRESHOLD)


def cartpole_kernel(
    state: torch.Tensor,
    elapsed: torch.Tensor,
    done: torch.Tensor,
    actions: torch.Tensor,
    fresh: torch.Tensor,
    max_steps: float,
) -> tuple[torch.Tensor, ...]:
    """One CartPole step for every env, autoreset included; no host sync.

    The flags take the dtype of ``done``. Eager torch pays per operation, so
    there they stay bool and need no conversions; inductor's CPU code
    handles bool tensors slowly (about 3x on this kernel) but fuses float
    arithmetic well, so the compiled step passes 0/1 floats. Under
    ``torch.compile`` the dtype test below is resolved once, at tracing.

    Args:
        state: ``(4, n)`` rows x, x_dot, theta, theta_dot.
        elapsed: ``(n,)`` steps in the current episode (float, whole numbers).
        done: ``(n,)`` bool, or 0/1 floats: the env finished on the previous step.
        actions: ``(n,)`` 0 (push left) or 1 (push right), any numeric dtype.
        fresh: ``(4, n)`` initial states for the envs that reset now.
        max_steps: Truncation length.

    Returns:
        ``(state, elapsed, done, reward, terminated, truncated, success)``;
        ``success`` marks episodes truncated without having fallen.
    """
    as_bool = done.dtype == torch.bool
    resetting = done if as_bool else done > 0.5
    new_state = torch.where(resetting, fresh, cartpole_physics(state, actions))
    # A fresh state lies well inside the thresholds, so resetting envs never
    # read as terminated and need no extra mask.
    terminated = _fallen(new_state)
    reward = (~resetting).to(state.dtype)
    elapsed = (elapsed + 1.0).mul_(reward)
    truncated = elapsed >= max_steps
    if as_bool:
        return new_state, elapsed, terminated | truncated, reward, terminated, truncated, truncated > terminated
    term, trunc = terminated.to(state.dtype), truncated.to(state.dtype)
    new_done = torch.maximum(term, trunc)
    return new_state, elapsed, new_done, reward, term, trunc, new_done - term


class CartPole(BatchedEnv):
    """Batched CartPole-v1; see the module docstring.

    Args:
        n_envs: Batch size.
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"``.
        seed: Seeds the reset noise.
        dtype: ``torch.float32`` or ``torch.float64``.
        max_episode_steps: Truncation length (500 as in v1).
        compile: Run the step through ``torch.compile`` (first step compiles).
        render_size: (height, width) of rendered frames.

    Raises:
        ValueError: For bad sizes (see :class:`BatchedEnv`).

    Attributes:
        state: ``(n_envs, 4)`` view of x, x_dot, theta, theta_dot; assign a
            ``(n_envs, 4)`` tensor to set it.
    """

    name = "cartpole"
    action_names = ("push-left", "push-right")
    render_fps = 50.0
    reward_threshold = 475.0

    def __init__(
        self,
        n_envs: int,
        *,
        device: str | torch.device = "auto",
        seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
        max_episode_steps: int = 500,
        compile: bool = False,
        render_size: tuple[int, int] = (120, 180),
    ) -> None:
        super().__init__(n_envs, device=device, seed=seed, dtype=dtype, max_episode_steps=max_episode_steps)
        height, width = (int(v) for v in render_size)
        if height < 16 or width < 16:
            raise ValueError(f"render_size must be at least (16, 16), got {render_size!r}")
        self._render_hw = (height, width)
        # An env resets at most once per (shortest episode + 1) steps, so a
        # pool that lives that long is never reused by the same env.
        self.reset_pool_steps = min(MIN_EPISODE_STEPS, self.max_episode_steps) + 1
        self._state = torch.zeros(4, self.n_envs, dtype=self.dtype, device=self.device)
        self.compiled = bool(compile)
        self._kernel = torch.compile(cartpole_kernel, dynamic=False, fullgraph=True) if compile else cartpole_kernel
        if not compile:  # bool flags suit eager mode (see cartpole_kernel)
            self._done = torch.zeros(self.n_envs, dtype=torch.bool, device=self.device)
        self._grid = PixelGrid(height, width, self.device, self.dtype)
        self._static: torch.Tensor | None = None  # drawn on first use
        self._background_rgb: torch.Tensor | None = None
        self._palette = torch.tensor(
            [
                [248, 248, 244],  # background
                [90, 90, 90],  # track
                [200, 70, 60],  # x-threshold markers
                [45, 45, 55],  # cart
                [205, 155, 100],  # pole
                [125, 135, 205],  # axle
            ],
            dtype=torch.uint8,
            device=self.device,
        )

    # -- metadata -------------------------------------------------------------
    @property
    def observation_shape(self) -> tuple[int, ...]:
        """``(4,)``: x, x_dot, theta, theta_dot."""
        return (4,)

    @property
    def render_shape(self) -> tuple[int, int]:
        """(height, width) of frames."""
        return self._render_hw

    # -- state ----------------------------------------------------------------
    @property
    def state(self) -> torch.Tensor:
        """``(n_envs, 4)`` view of the state (x, x_dot, theta, theta_dot)."""
        return self._state.T

    @state.setter
    def state(self, value: torch.Tensor) -> None:
        """Set every env's state from an ``(n_envs, 4)`` tensor (resets first if never reset).

        Raises:
            ValueError: For another shape.
        """
        value = torch.as_tensor(value)
        if value.shape != (self.n_envs, 4):
            raise ValueError(f"state must have shape ({self.n_envs}, 4), got {tuple(value.shape)}")
        if self._awaiting_reset:
            self.reset()
        self._state = value.to(self.device, self.dtype).T.contiguous()

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {"state": self._state}

    # -- dynamics ---------------------------------------------------------------
    def _uniform_states(self) -> torch.Tensor:
        return torch.empty(4, self.n_envs, dtype=self.dtype, device=self.device).uniform_(
            RESET_LOW, RESET_HIGH, generator=self.generator
        )

    def _reset_all(self) -> None:
        self._state = self._uniform_states()

    def _draw_reset_pool(self) -> dict[str, torch.Tensor]:
        return {"state": self._uniform_states()}

    def _step(self, actions: torch.Tensor, pool: dict[str, torch.Tensor]) -> StepResult:
        state, elapsed, done, reward, terminated, truncated, success = self._kernel(
            self._state, self._elapsed, self._done, actions, pool["state"], float(self.max_episode_steps)
        )
        self._state, self._elapsed, self._done = state, elapsed, done
        return state.T, reward, terminated.bool(), truncated.bool(), {"success": success.bool()}

    def observe(self) -> torch.Tensor:
        """``(n_envs, 4)`` observations (the state)."""
        return self._state.T

    # -- pictures ---------------------------------------------------------------
    def capture_state(self) -> torch.Tensor:
        """``(n_envs, 4)``: the state is all a frame needs."""
        return self._state.T

    def draw_episode(self, env_id: int, states: torch.Tensor) -> torch.Tensor:
        """Frames for a ``(T, 4)`` sequence of states (``env_id`` is not needed)."""
        del env_id  # every cartpole looks the same apart from its state
        return self._draw(states[:, 0], states[:, 2])

    def _render(self, env_ids: torch.Tensor) -> torch.Tensor:
        return self._draw(self._state[0, env_ids], self._state[2, env_ids])

    def _draw(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """``uint8 (k, H, W, 3)`` frames for cart positions ``x`` and angles ``theta``.

        Only the box that the cart and pole cover in some frame is computed
        (reading its bounds synchronises once); every other pixel is a copy
        of the static background. The pixels are those a full-frame drawing
        gives: the box holds every pixel any shape reaches, with a margin.
        """
        x = x.to(self.device, self.dtype)
        theta = theta.to(self.device, self.dtype)
        (height, width), shape = self._render_hw, self._shape
        cx = width / 2 + x * shape["scale"]
        frames = self._background().expand(x.shape[0], height, width, 3).clone()
        if x.shape[0] == 0:
            return frames
        tip_x = cx + shape["pole_len"] * torch.sin(theta)
        tip_y = shape["pivot_y"] - shape["pole_len"] * torch.cos(theta)
        half_cart, half_pole = shape["cart_w"] / 2, shape["pole_w"] / 2
        left = torch.minimum(cx - half_cart, torch.minimum(cx, tip_x) - half_pole).min()
        right = torch.maximum(cx + half_cart, torch.maximum(cx, tip_x) + half_pole).max()
        # Rows: the pole spans pivot..tip, the cart's rows are fixed.
        top = (tip_y.min().clamp(max=shape["pivot_y"]) - half_pole).clamp(max=shape["cart_top"])
        bottom = (tip_y.max().clamp(min=shape["pivot_y"]) + half_pole).clamp(min=shape["cart_bottom"])
        bounds = torch.stack((left, right, top, bottom)).tolist()
        if all(math.isfinite(b) for b in bounds):
            cols = slice(max(0, math.floor(bounds[0]) - 2), max(0, min(width, math.ceil(bounds[1]) + 2)))
            rows = slice(max(0, math.floor(bounds[2]) - 2), max(0, min(height, math.ceil(bounds[3]) + 2)))
        else:  # NaN or infinite states: draw the whole frame
            cols, rows = slice(0, width), slice(0, height)
        if cols.start < cols.stop and rows.start < rows.stop:
            frames[:, rows, cols] = self._draw_box(cx, theta, rows, cols)
        return frames

    def _draw_box(self, cx: torch.Tensor, theta: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        """``uint8 (k, h, w, 3)``: the frames' ``rows x cols`` box with the cart and pole."""
        grid, shape = self._grid.crop(rows, cols), self._shape
        cy, pivot_y, pole_w = shape["cy"], shape["pivot_y"], shape["pole_w"]
        cx = cx.view(-1, 1, 1)
        labels = self._static_labels()[:, rows, cols].expand(cx.shape[0], -1, -1)
        # Cart: a row band and a column band, combined once.
        cart = ((grid.xs - cx).abs() <= shape["cart_w"] / 2) & ((grid.ys - cy).abs() <= shape["cart_h"] / 2)
        labels = paint(labels, cart, 3)
        # Pole: a rotated rectangle from the pivot; y grows downwards in pixels.
        sin_t = torch.sin(theta).view(-1, 1, 1)
        cos_t = torch.cos(theta).view(-1, 1, 1)
        dx, dy = grid.xs - cx, grid.ys - pivot_y
        along = dx * sin_t - dy * cos_t
        across = dx * cos_t + dy * sin_t
        pole = (along >= 0) & (along <= shape["pole_len"]) & (across.abs() <= pole_w / 2)
        labels = paint(labels, pole, 4)
        axle = disc_mask(grid, cx.view(-1), torch.full_like(cx.view(-1), pivot_y), pole_w / 2)
        labels = paint(labels, axle, 5)
        return palette_image(labels, self._palette)

    @property
    def _shape(self) -> dict[str, float]:
        """Pixel geometry of the picture: scale, cart and pole sizes, their rows."""
        height, width = self._render_hw
        scale = width / (2 * X_THRESHOLD)  # pixels per metre: the track spans the frame
        cy, cart_h = 0.75 * height, 0.24 * scale
        return {
            "scale": scale,
            "cart_w": 0.4 * scale,
            "cart_h": cart_h,
            "cart_top": cy - cart_h / 2,
            "cart_bottom": cy + cart_h / 2,
            "pole_w": 0.08 * scale,
            "pole_len": 2 * HALF_POLE_LENGTH * scale,
            "cy": cy,
            "pivot_y": cy - 0.06 * scale,
        }

    def _static_labels(self) -> torch.Tensor:
        """``(1, H, W)`` labels of what never moves: background, track, threshold marks (cached)."""
        if self._static is None:
            grid, (height, width), shape = self._grid, self._render_hw, self._shape
            cy, cart_h = shape["cy"], shape["cart_h"]
            labels = torch.zeros((1, height, width), dtype=torch.uint8, device=self.device)
            labels = paint(labels, (grid.ys - (cy + cart_h / 2)).abs() <= 1.0, 1)
            edges = torch.tensor([-X_THRESHOLD, X_THRESHOLD], device=self.device, dtype=self.dtype)
            edges = edges * shape["scale"] + width / 2
            near_edge = (grid.xs.view(-1, 1) - edges).abs().amin(-1).view(1, 1, -1) <= 1.0
            self._static = paint(labels, near_edge & ((grid.ys - cy).abs() <= cart_h), 2)
        return self._static

    def _background(self) -> torch.Tensor:
        """``uint8 (1, H, W, 3)``: the static labels in colour (cached)."""
        if self._background_rgb is None:
            self._background_rgb = palette_image(self._static_labels(), self._palette)
        return self._background_rgb

    def describe(self) -> dict[str, Any]:
        """Name, sizes, device and whether the step is compiled."""
        return {**super().describe(), "compiled": self.compiled}
