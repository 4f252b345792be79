"""Procedural colour fundus photographs with lesion ground truth (the retina system).

A sample imitates a 45-50 degree, macula-centred fundus photograph from a screening programme
(seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 5.3: Kaggle/EyePACS, DiaretDB1, e-ophtha)
and carries everything needed to evaluate a referable-DR detector at the image level and its
heatmaps at the lesion level (seed Sec. 5.5).

Scene (all lengths scale with the field-of-view radius R; ``u = R / 240`` is the pixel scale, so
u ~ 1 for a 512 px frame):

* Field of view: a disc of radius R (0.43-0.52 of the frame height; it may be cut by the top and
  bottom of a wide frame), centre shifted at random, black outside with a soft rim, vignetting
  and a linear illumination gradient.
* Fundus: orange-red background with a smooth choroidal texture; darker macula and fovea
  (macular pigment absorbs green/blue more than red); bright yellow-white optic disc (slightly
  oval) with a paler cup, 0.68-0.78 R nasal to the fovea; left or right eye at random.
* Vessels: an artery tree and a vein tree grown as random walks from the disc: two temporal
  arcades bending around the macula, two nasal trunks, small macular branches; branches spawn
  along each vessel (Murray's law thins the parent), radii taper, vessels stop at the frame, the
  FOV rim and the foveal avascular zone. Veins are wider (trunk radius 2.6-3.1 u) and darker,
  arteries narrower (1.9-2.3 u), lighter, with a central light reflex. Vessel absorbance follows
  the chord length through a cylinder; where an artery crosses a vein the darker one wins.
* Lesions (mask type in brackets), placed inside 0.86 R, off the disc, not overlapping a lesion
  of another type:
  microaneurysms [1]: round dark-red dots, radius 1.2-2.2 u (diameter 2.4-4.4 px at u = 1), kept
  off vessels; haemorrhages [2]: dot/blot haemorrhages (irregular dark-red blobs, radius 3.5-9 u)
  and flame haemorrhages (feathered streaks 12-32 u long, oriented along the nerve fibres, i.e.
  radially from the disc); hard exudates [3]: clusters (often circinate rings) of 3-14 small
  sharp-edged yellow spots, radius 1-3.5 u; cotton-wool spots [4]: pale, fuzzy ovals, half-max
  semi-axes 4-10 u x 3-6 u, near the disc and arcades. Proliferative eyes also get
  neovascularisation: a tuft of fine, tortuous vessels at the disc or along an arcade
  (kind 5 in the lesion list, NOT in the mask, whose types are 0-4 only).
* Confounders (not lesions, not in the mask): dust on the lens (grey, blurred dark dots that
  look like microaneurysms), specular reflections beside the large vessels and a foveal reflex
  (white, bright spots that look like exudates or cotton-wool spots), vessel crossings.
* Camera: one of four presets (colour gains = white balance/hue, gamma, brightness, blur,
  noise, haze, vignetting) with per-image jitter, then 8-bit quantisation.

Grading rule (ETDRS-like, from the lesion list: ``grade_from_lesions``), with n_MA, n_H, n_EX,
n_CW the numbers of microaneurysms, haemorrhages, hard-exudate spots, cotton-wool spots:

* 4 proliferative DR: any neovascularisation;
* 3 severe NPDR: n_H >= 10, or n_H >= 5 together with n_CW >= 2;
* 2 moderate NPDR: n_H >= 1 or n_EX >= 1 or n_CW >= 1 or n_MA > 5;
* 1 mild NPDR: 1 <= n_MA <= 5 and nothing else;
* 0 no DR: no lesion.

referable = grade >= 2 (seed Sec. 5.3.1: moderate NPDR or more). A latent stage is drawn with
probabilities ``FundusConfig.stage_probs`` = (0.45, 0.25, 0.18, 0.08, 0.04), lesion counts are
drawn given the stage so that the rule gives back that stage (unless a lesion cannot be placed),
hence about 30 % referable images (Kaggle: 19.6 %; seed Sec. 5.3.1).

Every random choice comes from the ``numpy.random.Generator`` passed in: same seed, same bytes.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

NONE, MICROANEURYSM, HAEMORRHAGE, HARD_EXUDATE, COTTON_WOOL, NEOVASCULARISATION = range(6)
LESION_TYPES = {
    MICROANEURYSM: "microaneurysm",
    HAEMORRHAGE: "haemorrhage",
    HARD_EXUDATE: "hard_exudate",
    COTTON_WOOL: "cotton_wool_spot",
}
GRADES = ("no DR", "mild NPDR", "moderate NPDR", "severe NPDR", "proliferative DR")

# Absorbance per colour channel (R, G, B) of blood in display units: red lesions and vessels are
# most visible in green, as in real photographs.
BLOOD = np.array([0.18, 1.0, 0.70], np.float32)
EXUDATE_RGB = np.array([1.0, 0.90, 0.42], np.float32)
COTTON_RGB = np.array([0.97, 0.88, 0.76], np.float32)
REFLECTION_RGB = np.array([0.97, 0.98, 1.0], np.float32)
DISC_RGB = np.array([1.0, 0.70, 0.42], np.float32)
CUP_RGB = np.array([1.0, 0.88, 0.70], np.float32)


@dataclass(frozen=True)
class Camera:
    """A fundus camera: white balance (gains), gamma (out = in ** gamma), brightness, optical
    blur (std in units of u), read noise (std on the [0, 1] scale), haze (additive veil) and
    vignetting (relative loss of light at the rim)."""

    name: str
    gains: tuple[float, float, float]
    gamma: float
    brightness: float
    blur: float
    noise: float
    haze: float
    vignette: float


CAMERAS = (
    Camera("warm", (1.00, 0.95, 0.85), 1.00, 1.00, 0.55, 0.008, 0.00, 0.45),
    Camera("cool", (0.86, 1.08, 1.25), 0.85, 1.05, 0.75, 0.012, 0.02, 0.35),
    Camera("dark", (1.05, 0.85, 0.70), 1.25, 0.80, 0.50, 0.010, 0.00, 0.55),
    Camera("hazy", (0.95, 1.00, 1.05), 0.80, 1.10, 0.95, 0.015, 0.06, 0.30),
)


@dataclass
class FundusConfig:
    """Simulator settings. ``size``: frame height (px); ``width``: frame width (None = square);
    ``fov_radius``: range of the FOV radius relative to the frame height; ``fov_shift``: largest
    shift of the FOV centre relative to the frame sides; ``stage_probs``: probabilities of the
    latent stages 0-4; ``cameras``: indices into ``CAMERAS`` to choose from; ``dust_rate`` and
    ``reflection_rate``: mean numbers of dust specks and specular reflections per image."""

    size: int = 512
    width: int | None = None
    fov_radius: tuple[float, float] = (0.43, 0.52)
    fov_shift: float = 0.04
    stage_probs: tuple[float, float, float, float, float] = (0.45, 0.25, 0.18, 0.08, 0.04)
    cameras: tuple[int, ...] = (0, 1, 2, 3)
    dust_rate: float = 2.5
    reflection_rate: float = 3.0


@dataclass(frozen=True)
class Lesion:
    """One lesion: ``kind`` (1-4 as in the mask, 5 neovascularisation), centre (``y``, ``x``) in
    pixels (pixel centres at integer coordinates), ``size`` its largest half-extent in pixels,
    ``shape`` ('dot', 'blot', 'flame', 'spot', 'oval', 'tuft')."""

    kind: int
    y: float
    x: float
    size: float
    shape: str = ""


@dataclass(frozen=True)
class Confounder:
    """A lesion look-alike that is not a lesion: ``kind`` 'dust', 'reflection' or 'foveal_reflex'."""

    kind: str
    y: float
    x: float
    size: float


@dataclass
class FundusSample:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, 0 none, 1 MA, 2 haemorrhage, 3 hard exudate, 4 cotton wool
    grade: int
    referable: bool
    lesions: list[Lesion]
    confounders: list[Confounder] = field(default_factory=list)
    camera: int = 0
    fov: tuple[float, float, float] = (0.0, 0.0, 0.0)  # centre y, centre x, radius (px)
    disc: tuple[float, float, float] = (0.0, 0.0, 0.0)  # centre y, centre x, radius (px)
    fovea: tuple[float, float] = (0.0, 0.0)
    stage: int = 0  # the latent stage the lesion counts were drawn for


def grade_from_lesions(lesions) -> int:
    """ETDRS-like grade 0-4 from a lesion list (the rule in the module docstring)."""
    n = Counter(lesion.kind for lesion in lesions)
    if n[NEOVASCULARISATION]:
        return 4
    if n[HAEMORRHAGE] >= 10 or (n[HAEMORRHAGE] >= 5 and n[COTTON_WOOL] >= 2):
        return 3
    if n[HAEMORRHAGE] or n[HARD_EXUDATE] or n[COTTON_WOOL] or n[MICROANEURYSM] > 5:
        return 2
    return 1 if n[MICROANEURYSM] else 0


def lesion_plan(stage: int, rng: np.random.Generator) -> dict[str, int]:
    """Lesion counts for a latent stage: microaneurysms, haemorrhages, exudate clusters,
    cotton-wool spots, neovascular tufts. The counts grade back to ``stage`` (before placement)."""
    p = rng.poisson
    plan = dict(ma=0, haem=0, clusters=0, cws=0, nv=0)
    if stage == 1:
        plan["ma"] = min(1 + p(1.2), 5)
    elif stage == 2:
        plan.update(ma=p(5.0), haem=min(p(2.5), 9), clusters=p(0.8), cws=p(0.4))
        if plan["haem"] >= 5:
            plan["cws"] = min(plan["cws"], 1)
        if plan["ma"] <= 5 and not (plan["haem"] or plan["clusters"] or plan["cws"]):
            plan["haem"] = 1
    elif stage == 3:
        plan.update(ma=4 + p(8.0), haem=10 + p(8.0), clusters=p(1.5), cws=p(2.0))
    elif stage == 4:
        plan.update(ma=3 + p(6.0), haem=3 + p(8.0), clusters=p(1.2), cws=p(1.5), nv=1 + (rng.random() < 0.3))
    return plan


# ---------------------------------------------------------------------------------------------
# small helpers


def _smooth_noise(shape: tuple[int, int], corr: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with correlation length ~``corr`` px: coarse
    white noise interpolated separably with Gaussian weights (two small matrix products)."""
    step = max(corr, 1.0)
    mats = []
    for n in shape:
        m = int(math.ceil(n / step)) + 4
        t = np.arange(n) / step + 2.0
        w = np.exp(-0.5 * ((t[:, None] - np.arange(m)[None]) / 0.7) ** 2)
        mats.append((w / w.sum(1, keepdims=True)).astype(np.float32))
    coarse = rng.standard_normal((mats[0].shape[1], mats[1].shape[1]), dtype=np.float32)
    out = (mats[0] @ coarse) @ mats[1].T
    out -= out.mean()
    return (out / max(out.std(), 1e-12)).astype(np.float32)


def _window(cy: float, cx: float, half: float, shape):
    """Slices of the pixel window around (cy, cx) and the offsets dy (n, 1), dx (1, m) of its
    pixel centres; None if it lies outside the frame."""
    y0, y1 = max(int(math.floor(cy - half)), 0), min(int(math.ceil(cy + half)) + 1, shape[0])
    x0, x1 = max(int(math.floor(cx - half)), 0), min(int(math.ceil(cx + half)) + 1, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    return (slice(y0, y1), slice(x0, x1)), dy, dx


def _rotated(dy, dx, angle):
    """Coordinates along and across direction ``angle`` (dy = sin, dx = cos)."""
    c, s = math.cos(angle), math.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


def _star_radius(theta, rng, wobble, harmonics=5):
    k = np.arange(2, harmonics + 1)
    amp = rng.uniform(0, wobble, len(k)) / np.sqrt(k)
    phase = rng.uniform(0, 2 * np.pi, len(k))
    return 1 + np.tensordot(amp, np.cos(k[:, None, None] * theta[None] + phase[:, None, None]), 1)


# ---------------------------------------------------------------------------------------------
# vessels


@dataclass
class _Eye:
    shape: tuple[int, int]
    cy: float
    cx: float
    R: float
    u: float
    side: int  # +1: fovea to the right of the disc (image x), -1: to the left
    fovea: tuple[float, float]
    disc: tuple[float, float, float]


def _walk(rng, start, heading, length, step, curvature, wiggle, wave=0.0, wave_len=10.0):
    """A smooth random path: heading = integral of (curvature + smooth noise of std ``wiggle``,
    rad/px), plus a smooth sideways displacement of std ``wave`` px and correlation ``wave_len``
    px (tortuosity without drift). Returns points (n, 2) and headings (n,)."""
    n = max(int(length / step), 2)
    kappa = np.broadcast_to(np.asarray(curvature, np.float64), (n,))
    sig = 8.0
    noise = ndimage.gaussian_filter1d(rng.standard_normal(n), sig, mode="nearest")
    noise *= wiggle * math.sqrt(2 * math.sqrt(math.pi) * sig)
    theta = heading + np.cumsum((kappa + noise) * step)
    pts = start + np.cumsum(step * np.stack([np.sin(theta), np.cos(theta)], 1), 0)
    if wave:
        sig = max(wave_len / step, 1.0)
        side = ndimage.gaussian_filter1d(rng.standard_normal(n), sig, mode="nearest")
        side *= wave * math.sqrt(2 * math.sqrt(math.pi) * sig) * np.clip(np.arange(n) / sig, 0, 1)
        pts += side[:, None] * np.stack([np.cos(theta), -np.sin(theta)], 1)
    return pts, theta


def _grow(rng, eye: _Eye, start, heading, radius, length, curvature, depth, out, wiggle=None):
    """Grow one vessel and (recursively) its branches; append (points (n, 2), radii (n,),
    tip fade (n,)) to ``out``."""
    u, R = eye.u, eye.R
    step = 0.7
    wiggle = (0.002 if depth == 2 else 0.005) / u if wiggle is None else wiggle
    wave = (0.8 if depth == 2 else 1.3) * u
    pts, theta = _walk(rng, np.asarray(start, np.float64), heading, length, step, curvature, wiggle,
                       wave, 12 * u)
    s = np.arange(len(pts)) * step
    r = radius * (1 - 0.15 * s / max(length, 1.0))
    rmin = max(0.45 * u, 0.3)
    d_fov = np.hypot(pts[:, 0] - eye.cy, pts[:, 1] - eye.cx)
    d_fov_pos = np.hypot(pts[:, 0] - eye.fovea[0], pts[:, 1] - eye.fovea[1])
    inside = (pts > -2).all(1) & (pts[:, 0] < eye.shape[0] + 1) & (pts[:, 1] < eye.shape[1] + 1)
    ok = (d_fov < 1.01 * R) & (d_fov_pos > 0.075 * R) & inside
    stop = int(np.argmin(ok)) if not ok.all() else len(pts)
    # branch points: exponential spacing, alternating sides, beyond the disc rim
    branches = []
    if depth > 0:
        pos = 0.5 * eye.disc[2] + rng.uniform(0.02, 0.1) * R
        sign = rng.choice([-1.0, 1.0])
        while True:
            pos += rng.uniform(0.08, 0.2) * R * (1.5 if depth == 1 else 1.0)
            k = int(pos / step)
            if k >= stop - 5:
                break
            rc = r[k] * rng.uniform(0.35, 0.7)
            if rc < rmin:
                break
            branches.append((k, rc, sign))
            sign = -sign
    for k, rc, _ in branches:  # Murray's law r_p^3 = r_1^3 + r_2^3 thins the parent downstream
        r[k:] *= (max(1 - (rc / max(r[k], 1e-6)) ** 3, 0.05)) ** (1 / 3)
    alive = np.nonzero(r[:stop] < rmin)[0]
    if len(alive):
        stop = int(alive[0])
    if stop >= 2:
        fade = np.clip((stop - 1 - np.arange(stop)) * step / (15 * u), 0, 1) ** 0.7  # fading tip
        out.append((pts[:stop], r[:stop], fade))
    for k, rc, sign in branches:
        if k >= stop:
            continue
        child_len = rng.uniform(0.25, 0.6) * R * (rc / (1.5 * u)) ** 0.5
        child_heading = theta[k] + sign * rng.uniform(0.45, 1.15)
        _grow(rng, eye, pts[k], child_heading, rc, child_len, rng.normal(0, 1.5) / R, depth - 1, out)


def _vessel_trees(rng, eye: _Eye):
    """Centrelines of the artery and vein trees: lists of (points, radii)."""
    u, R, side = eye.u, eye.R, eye.side
    dy0, dx0, rd = eye.disc
    trees = {"artery": [], "vein": []}
    temporal = 0.0 if side > 0 else math.pi
    for kind, rscale, offset in (("artery", 1.0, 0.0), ("vein", 1.35, 1.0)):
        out = trees[kind]
        jitter = offset * rng.uniform(-0.12, 0.12)
        for up in (-1, 1):  # superior (up, y decreasing) and inferior arcades
            start = (dy0 + up * 0.25 * rd + rng.normal(0, 0.1 * rd),
                     dx0 + side * rng.uniform(-0.15, 0.2) * rd)
            heading = up * math.pi / 2 + side * rng.uniform(-0.25, 0.05) * (-up) + jitter
            # bend towards the temporal side around the macula, then straighten
            s = np.arange(int(1.7 * R / 0.7)) * 0.7
            k0 = 1 / (rng.uniform(0.42, 0.55) * R)
            kappa = -up * side * k0 * np.interp(s, [0, 0.65 * R, 1.0 * R, 1.7 * R], [1.0, 1.0, -0.1, -0.2])
            r0 = rng.uniform(1.9, 2.3) * u * rscale
            _grow(rng, eye, start, heading, r0, 1.7 * R, kappa, 2, out)
            # nasal trunk: up (or down) and towards the nasal side
            heading = up * math.pi / 2 + up * side * rng.uniform(0.35, 0.8) + jitter
            r0 = rng.uniform(1.5, 1.9) * u * rscale
            _grow(rng, eye, start, heading, r0, 1.2 * R, rng.normal(0, 0.6) / R, 2, out)
        for _ in range(2):  # small macular branches
            start = (dy0 + rng.normal(0, 0.3 * rd), dx0 + side * 0.5 * rd)
            r0 = rng.uniform(0.8, 1.1) * u * rscale**0.5
            heading = temporal + rng.uniform(-0.4, 0.4)
            _grow(rng, eye, start, heading, r0, 0.6 * R, rng.normal(0, 0.8) / R, 1, out)
    return trees


def _render_vessels(branches, eye: _Eye, strength: float, reflex: float) -> np.ndarray:
    """Vessel absorbance (H, W): chord length through a cylinder of the local radius, thinner
    vessels paler; radius groups get their own distance transform so that a thin branch next to
    a thick parent does not carve a gap into it."""
    H, W = eye.shape
    u = eye.u
    out = np.zeros((H, W), np.float32)
    if not branches:
        return out
    pts = np.concatenate([b[0] for b in branches])
    rad = np.concatenate([b[1] for b in branches])
    fade = np.concatenate([b[2] for b in branches])
    iy, ix = np.rint(pts[:, 0]).astype(int), np.rint(pts[:, 1]).astype(int)
    keep = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W) & (fade > 0)
    iy, ix, rad, fade = iy[keep], ix[keep], rad[keep], fade[keep].astype(np.float32)
    edges = [0, 1.5 * u, np.inf]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (rad >= lo) & (rad < hi)
        if not sel.any():
            continue
        rmax = float(rad[sel].max())
        pad = int(math.ceil(rmax + 3))
        y0, y1 = max(iy[sel].min() - pad, 0), min(iy[sel].max() + pad + 1, H)
        x0, x1 = max(ix[sel].min() - pad, 0), min(ix[sel].max() + pad + 1, W)
        free = np.ones((y1 - y0, x1 - x0), bool)
        rimg = np.zeros((y1 - y0, x1 - x0), np.float32)
        fimg = np.zeros((y1 - y0, x1 - x0), np.float32)
        order = np.argsort(rad[sel], kind="stable")  # thicker points win a shared pixel
        yy, xx, rr = iy[sel][order] - y0, ix[sel][order] - x0, rad[sel][order]
        free[yy, xx] = False
        rimg[yy, xx] = rr
        fimg[yy, xx] = fade[sel][order]
        dist, (ny, nx) = ndimage.distance_transform_edt(free, return_indices=True)
        py, px = np.nonzero(dist < rmax + 0.5)  # only pixels near a centreline
        dist = dist[py, px].astype(np.float32)
        rn = rimg[ny[py, px], nx[py, px]]
        chord = np.sqrt(np.clip(1 - (dist / (rn + 0.5)) ** 2, 0, 1))
        a = strength * np.minimum(1.0, (rn / (1.6 * u)) ** 0.6) * chord * fimg[ny[py, px], nx[py, px]]
        if reflex:
            a *= 1 - reflex * np.exp(-((dist / (0.3 * rn + 1e-6)) ** 2)) * (rn > 1.3 * u)
        view = out[y0:y1, x0:x1]
        view[py, px] = np.maximum(view[py, px], a)
    return out


# ---------------------------------------------------------------------------------------------
# lesions


class _Placer:
    """Rejection sampling of lesion centres: inside 0.86 R of the FOV centre and inside the
    frame, off the optic disc, not overlapping lesions of another type."""

    def __init__(self, eye: _Eye, vessels: np.ndarray, rng):
        self.eye, self.vessels, self.rng = eye, vessels, rng
        self.placed = []  # (y, x, extent, kind)

    def place(self, extent, kind, half, **options):
        """A lesion centre from :meth:`sample` and the pixel window of half-size ``half``
        around it (:func:`_window`) -> (pos, (slices, dy, dx)), or None if either fails."""
        pos = self.sample(extent, kind, **options)
        win = None if pos is None else _window(*pos, half, self.eye.shape)
        return None if win is None else (pos, win)

    def sample(self, extent, kind, near=None, spread=None, avoid_vessels=False, tries=64):
        eye, rng = self.eye, self.rng
        if near is None:
            rr = 0.86 * eye.R * np.sqrt(rng.random(tries))
            tt = rng.uniform(0, 2 * np.pi, tries)
            cand = np.stack([eye.cy + rr * np.sin(tt), eye.cx + rr * np.cos(tt)], 1)
        else:
            cand = np.asarray(near) + rng.normal(0, 1, (tries, 2)) * spread
        ok = np.hypot(cand[:, 0] - eye.cy, cand[:, 1] - eye.cx) < 0.86 * eye.R - extent
        ok &= (cand[:, 0] > extent + 2) & (cand[:, 0] < eye.shape[0] - extent - 3)
        ok &= (cand[:, 1] > extent + 2) & (cand[:, 1] < eye.shape[1] - extent - 3)
        dy, dx, rd = eye.disc
        ok &= np.hypot(cand[:, 0] - dy, cand[:, 1] - dx) > 1.15 * rd + extent + 2 * eye.u
        if avoid_vessels:
            iy = np.clip(np.rint(cand[:, 0]).astype(int), 0, eye.shape[0] - 1)
            ix = np.clip(np.rint(cand[:, 1]).astype(int), 0, eye.shape[1] - 1)
            win = max(int(round(extent + eye.u)), 1)
            near_v = np.zeros(len(cand), bool)
            for oy in (-win, 0, win):
                for ox in (-win, 0, win):
                    yy = np.clip(iy + oy, 0, eye.shape[0] - 1)
                    xx = np.clip(ix + ox, 0, eye.shape[1] - 1)
                    near_v |= self.vessels[yy, xx] > 0.1
            ok &= ~near_v
        if self.placed:
            prev = np.array(self.placed)
            d = np.hypot(cand[:, None, 0] - prev[None, :, 0], cand[:, None, 1] - prev[None, :, 1])
            clash = (d < extent + prev[None, :, 2] + 2 * eye.u) & (prev[None, :, 3] != kind)
            ok &= ~clash.any(1)
        idx = np.flatnonzero(ok)
        if not len(idx):
            return None
        y, x = cand[idx[0]]
        self.placed.append((y, x, extent, kind))
        return float(y), float(x)


def _paint_red(absorb, mask, lesion_kind, win, alpha, inside):
    sl, _, _ = win
    np.maximum(absorb[sl], alpha.astype(np.float32), out=absorb[sl])
    mask[sl][inside] = lesion_kind


def _microaneurysm(rng, eye, placer, absorb, mask, lesions):
    u = eye.u
    r = rng.uniform(1.2, 2.2) * u
    placed = placer.place(r + u, MICROANEURYSM, r + 2, avoid_vessels=True)
    if placed is None:
        return
    pos, win = placed
    _, dy, dx = win
    d = np.hypot(dy, dx)
    alpha = rng.uniform(0.9, 1.4) * np.clip(r - d + 0.5, 0, 1)
    inside = (d <= max(r, 0.5)) | (d == d.min())
    _paint_red(absorb, mask, MICROANEURYSM, win, alpha, inside)
    lesions.append(Lesion(MICROANEURYSM, *pos, float(r), "dot"))


def _haemorrhage(rng, eye, placer, absorb, mask, lesions):
    u = eye.u
    flame = rng.random() < 0.35
    if flame:
        a, b = rng.uniform(6, 16) * u, rng.uniform(1.8, 3.5) * u
        extent = a
    else:
        a = b = rng.uniform(3.5, 9.0) * u
        extent = 1.3 * a
    placed = placer.place(extent, HAEMORRHAGE, extent + 2)
    if placed is None:
        return
    pos, win = placed
    _, dy, dx = win
    strength = rng.uniform(0.8, 1.3)
    if flame:
        angle = math.atan2(pos[0] - eye.disc[0], pos[1] - eye.disc[1]) + rng.normal(0, 0.15)
        along, across = _rotated(dy, dx, angle)
        width = b * np.clip(1 - (along / a) ** 2, 0.0, 1) ** 0.7 + 1e-3
        rho = np.maximum(np.abs(along) / a, np.abs(across) / width)
        edge = np.clip((1 - rho) * b / (0.8 * u) + 0.5, 0, 1)
        stripes = 0.8 + 0.2 * np.cos(2 * np.pi * across / (1.3 * u) + rng.uniform(0, 6.3))
        alpha = strength * edge * stripes
        shape = "flame"
    else:
        theta = np.arctan2(dy, dx)
        rho = np.hypot(dy, dx) / (a * _star_radius(theta, rng, 0.22))
        mottle = 1 + 0.15 * np.cos(dy / (1.7 * u) + rng.uniform(0, 6.3)) * np.cos(dx / (1.9 * u))
        alpha = strength * np.clip((1 - rho) * a / (0.9 * u) + 0.5, 0, 1) * mottle
        shape = "blot"
    inside = rho <= 1
    inside |= (dy == dy[np.abs(dy).argmin()]) & (dx == dx[0, np.abs(dx).argmin()])
    _paint_red(absorb, mask, HAEMORRHAGE, win, alpha, inside)
    lesions.append(Lesion(HAEMORRHAGE, *pos, float(extent), shape))


def _exudate_cluster(rng, eye, placer, bright, colour_alpha, mask, lesions):
    u = eye.u
    radius = rng.uniform(8, 28) * u
    # clusters sit in the posterior pole: around the fovea, within ~0.6 R
    centre = placer.sample(radius, HARD_EXUDATE, near=eye.fovea, spread=0.3 * eye.R)
    if centre is None:
        return
    n_spots = int(rng.integers(3, 15))
    ring = rng.random() < 0.5
    for _ in range(n_spots):
        r = rng.uniform(1.0, 3.5) * u
        if ring:
            t = rng.uniform(0, 2 * np.pi)
            rr = radius * rng.uniform(0.6, 1.0)
            near, spread = (centre[0] + rr * math.sin(t), centre[1] + rr * math.cos(t)), 1.0 * u
        else:
            near, spread = centre, 0.5 * radius
        placed = placer.place(r, HARD_EXUDATE, r + 2, near=near, spread=spread, tries=16)
        if placed is None:
            continue
        pos, (sl, dy, dx) = placed
        rho = np.hypot(dy, dx) / (r * _star_radius(np.arctan2(dy, dx), rng, 0.25))
        alpha = rng.uniform(0.75, 0.95) * np.clip((1 - rho) * r / (0.5 * u) + 0.5, 0, 1)
        inside = (rho <= 1) | (np.hypot(dy, dx) == np.hypot(dy, dx).min())
        np.maximum(colour_alpha[sl], alpha.astype(np.float32), out=colour_alpha[sl])
        bright[sl][alpha > 0] = EXUDATE_RGB * rng.uniform(0.92, 1.05)
        mask[sl][inside] = HARD_EXUDATE
        lesions.append(Lesion(HARD_EXUDATE, *pos, float(r), "spot"))


def _cotton_wool(rng, eye, placer, bright, colour_alpha, mask, lesions):
    u = eye.u
    a, b = rng.uniform(4, 10) * u, rng.uniform(3, 6) * u
    b = min(a, b)
    # near the disc and the arcades: within ~0.55 R of the disc centre
    placed = placer.place(1.6 * a, COTTON_WOOL, 2.2 * a + 2, near=eye.disc[:2], spread=0.35 * eye.R)
    if placed is None:
        return
    pos, (sl, dy, dx) = placed
    angle = math.atan2(pos[0] - eye.disc[0], pos[1] - eye.disc[1]) + math.pi / 2 + rng.normal(0, 0.3)
    along, across = _rotated(dy, dx, angle)
    rho2 = (along / a) ** 2 + (across / b) ** 2
    texture = 1 + 0.12 * np.cos(along / (1.5 * u) + rng.uniform(0, 6.3)) * np.cos(across / (1.2 * u))
    alpha = rng.uniform(0.5, 0.72) * np.exp(-math.log(2) * rho2**1.2) * texture
    alpha = np.clip(alpha, 0, 1)
    inside = rho2 <= 1
    np.maximum(colour_alpha[sl], alpha.astype(np.float32), out=colour_alpha[sl])
    bright[sl][alpha > 0.02] = COTTON_RGB * rng.uniform(0.95, 1.03)
    mask[sl][inside] = COTTON_WOOL
    lesions.append(Lesion(COTTON_WOOL, *pos, float(a), "oval"))


def _neovascular_tuft(rng, eye, out, lesions):
    u, R = eye.u, eye.R
    if rng.random() < 0.5:  # at the disc (NVD)
        ang = rng.uniform(0, 2 * np.pi)
        pos = (eye.disc[0] + 0.7 * eye.disc[2] * math.sin(ang),
               eye.disc[1] + 0.7 * eye.disc[2] * math.cos(ang))
    else:  # elsewhere, along an arcade (NVE): above or below the macula
        up = rng.choice([-1, 1])
        pos = (eye.fovea[0] + up * rng.uniform(0.35, 0.5) * R,
               eye.fovea[1] - eye.side * rng.uniform(0.0, 0.3) * R)
    extent = rng.uniform(10, 22) * u
    for _ in range(int(rng.integers(10, 20))):
        start = np.asarray(pos) + rng.normal(0, 0.4 * extent, 2)
        kappa = rng.choice([-1, 1]) / (rng.uniform(2.5, 6) * u)
        pts, _ = _walk(rng, start, rng.uniform(0, 2 * np.pi), rng.uniform(8, 25) * u, 0.5, kappa, 0.05 / u)
        fade = np.clip(np.minimum(np.arange(len(pts)), np.arange(len(pts))[::-1]) * 0.5 / (3 * u), 0, 1)
        out.append((pts, np.full(len(pts), rng.uniform(0.5, 0.8) * u), fade))
    lesions.append(Lesion(NEOVASCULARISATION, float(pos[0]), float(pos[1]), float(extent), "tuft"))


# ---------------------------------------------------------------------------------------------


def simulate(config: FundusConfig, rng: np.random.Generator) -> FundusSample:
    """One fundus photograph with its lesion mask, grade and lesion list (module docstring)."""
    H = int(config.size)
    W = int(config.width or config.size)
    if min(H, W) < 32:
        raise ValueError(f"fundus frames need at least 32 x 32 pixels, got {H} x {W}")
    # the latent stage and lesion counts first: a seed gives the same grade at any frame size
    stage = _draw_stage(config, rng)
    plan = lesion_plan(stage, rng)
    R = rng.uniform(*config.fov_radius) * min(H, W)
    cy = H / 2 - 0.5 + rng.uniform(-1, 1) * config.fov_shift * H
    cx = W / 2 - 0.5 + rng.uniform(-1, 1) * config.fov_shift * W
    u = R / 240.0
    side = int(rng.choice([-1, 1]))
    fovea = (cy + rng.normal(0, 0.03) * R, cx + side * rng.uniform(0.1, 0.2) * R)
    rd = rng.uniform(0.115, 0.145) * R
    disc = (fovea[0] + rng.uniform(-0.12, 0.02) * R, fovea[1] - side * rng.uniform(0.68, 0.78) * R, rd)
    eye = _Eye((H, W), cy, cx, R, u, side, fovea, disc)
    camera_idx = int(config.cameras[int(rng.integers(len(config.cameras)))])
    cam = CAMERAS[camera_idx]

    yy = np.arange(H, dtype=np.float32)[:, None]
    xx = np.arange(W, dtype=np.float32)[None, :]
    r_fov = np.hypot(yy - cy, xx - cx)

    # fundus background, macula, fovea
    base = np.array([rng.uniform(0.78, 0.92), rng.uniform(0.27, 0.38), rng.uniform(0.12, 0.24)], np.float32)
    texture = 1 + 0.022 * _smooth_noise((H, W), 12 * u, rng) + 0.012 * _smooth_noise((H, W), 3 * u, rng)
    image = base * texture[..., None]
    d_fovea2 = (yy - fovea[0]) ** 2 + (xx - fovea[1]) ** 2
    macula = np.exp(-d_fovea2 / (2 * (0.22 * R) ** 2)) * rng.uniform(0.6, 1.0)
    pit = np.exp(-d_fovea2 / (2 * (0.045 * R) ** 2))
    image *= 1 - (macula[..., None] * np.array([0.10, 0.28, 0.35], np.float32)
                  + pit[..., None] * np.array([0.10, 0.25, 0.30], np.float32))

    # optic disc and cup (computed in a window around the disc)
    sl, ddy, ddx = _window(disc[0], disc[1], 1.3 * rd + 3 * u, (H, W))
    rho_disc = np.hypot(ddy / (rd * rng.uniform(1.0, 1.12)), ddx / rd)
    temporal_bright = 1 + 0.15 * side * ddx / rd  # the temporal rim is paler
    a_disc = np.clip((1 - rho_disc) * rd / (2.5 * u) + 0.5, 0, 1) * rng.uniform(0.55, 0.75)
    a_disc = np.clip(a_disc * temporal_bright, 0, 1)
    cup_r = rng.uniform(0.3, 0.5) * rd
    rho_cup = np.hypot(ddy, ddx - side * 0.15 * rd) / cup_r
    a_cup = np.clip(1 - rho_cup**2, 0, 1) * rng.uniform(0.5, 0.75)
    patch = image[sl] * (1 - a_disc[..., None]) + a_disc[..., None] * DISC_RGB
    image[sl] = patch * (1 - a_cup[..., None]) + a_cup[..., None] * CUP_RGB

    # vessels (and neovascular tufts, drawn with the veins)
    trees = _vessel_trees(rng, eye)
    lesions: list[Lesion] = []
    nv_branches: list = []
    mask = np.zeros((H, W), np.uint8)
    for _ in range(plan["nv"]):
        _neovascular_tuft(rng, eye, nv_branches, lesions)
    a_vein = _render_vessels(trees["vein"] + nv_branches, eye, 1.0, 0.15)
    a_art = _render_vessels(trees["artery"], eye, 0.62, 0.45)

    # lesions
    placer = _Placer(eye, np.maximum(a_vein, a_art), rng)
    red = np.zeros((H, W), np.float32)
    bright = np.zeros((H, W, 3), np.float32)
    bright_alpha = np.zeros((H, W), np.float32)
    for _ in range(plan["clusters"]):
        _exudate_cluster(rng, eye, placer, bright, bright_alpha, mask, lesions)
    for _ in range(plan["cws"]):
        _cotton_wool(rng, eye, placer, bright, bright_alpha, mask, lesions)
    for _ in range(plan["haem"]):
        _haemorrhage(rng, eye, placer, red, mask, lesions)
    for _ in range(plan["ma"]):
        _microaneurysm(rng, eye, placer, red, mask, lesions)

    # compose: bright lesions under the vessels, then blood absorbance
    ba = bright_alpha[..., None]
    image = image * (1 - ba) + ba * bright
    absorb = np.maximum(a_vein[..., None] * BLOOD, a_art[..., None] * (BLOOD * np.float32(0.85)))
    absorb = np.maximum(absorb, red[..., None] * (BLOOD * np.float32(1.1)))
    image *= np.exp(-absorb)

    # confounders: specular reflections (beside large vessels, foveal reflex) and dust
    confounders: list[Confounder] = []
    big = np.argwhere(a_vein > 0.6) if rng.random() < 0.9 else np.zeros((0, 2), int)
    for _ in range(rng.poisson(config.reflection_rate)):
        if len(big) and rng.random() < 0.7:
            py, px = big[int(rng.integers(len(big)))] + rng.normal(0, 3 * u, 2)
        else:
            t, rr = rng.uniform(0, 2 * np.pi), 0.8 * R * math.sqrt(rng.random())
            py, px = cy + rr * math.sin(t), cx + rr * math.cos(t)
        a, b = rng.uniform(1.5, 5.0) * u, rng.uniform(0.8, 2.0) * u
        win = _window(py, px, 2.5 * a + 2, (H, W))
        if win is None:
            continue
        sl, dy, dx = win
        along, across = _rotated(dy, dx, rng.uniform(0, np.pi))
        rho2 = (along / a) ** 2 + (across / b) ** 2
        if rng.random() < 0.5:
            alpha = rng.uniform(0.35, 0.7) * np.exp(-math.log(2) * rho2)
        else:
            alpha = rng.uniform(0.5, 0.8) * np.clip((1 - np.sqrt(rho2)) * b / (0.6 * u) + 0.5, 0, 1)
        image[sl] = image[sl] * (1 - alpha[..., None]) + alpha[..., None] * REFLECTION_RGB
        confounders.append(Confounder("reflection", float(py), float(px), float(a)))
    if rng.random() < 0.5:
        win = _window(fovea[0], fovea[1], 4 * u + 2, (H, W))
        if win is not None:
            sl, dy, dx = win
            alpha = 0.5 * np.exp(-(dy**2 + dx**2) / (2 * (1.0 * u) ** 2))
            image[sl] = image[sl] * (1 - alpha[..., None]) + alpha[..., None] * REFLECTION_RGB
            confounders.append(Confounder("foveal_reflex", float(fovea[0]), float(fovea[1]), float(u)))
    for _ in range(rng.poisson(config.dust_rate)):
        t, rr = rng.uniform(0, 2 * np.pi), 0.9 * R * math.sqrt(rng.random())
        py, px = cy + rr * math.sin(t), cx + rr * math.cos(t)
        r = rng.uniform(1.0, 2.5) * u
        win = _window(py, px, 3 * r + 2, (H, W))
        if win is None:
            continue
        sl, dy, dx = win
        alpha = rng.uniform(0.3, 0.55) * np.exp(-math.log(2) * (dy**2 + dx**2) / r**2)
        image[sl] *= 1 - alpha[..., None]
        confounders.append(Confounder("dust", float(py), float(px), float(r)))

    # camera: illumination, aperture, blur, white balance, haze, gamma, noise, quantisation
    vign = 1 - cam.vignette * rng.uniform(0.8, 1.2) * np.clip(r_fov / R, 0, 1.2) ** 3
    g = rng.normal(0, 0.06, 2)
    light = vign * (1 + g[0] * (yy - cy) / R + g[1] * (xx - cx) / R)
    aperture = np.clip((R - r_fov) / (1.2 * u) + 0.5, 0, 1)
    image *= (light * aperture)[..., None]
    blur = cam.blur * u * rng.uniform(0.85, 1.15)
    image = ndimage.gaussian_filter(image, (blur, blur, 0))
    gains = np.asarray(cam.gains, np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    image *= gains * cam.brightness * rng.uniform(0.9, 1.1)
    image += (cam.haze * rng.uniform(0.7, 1.3)) * aperture[..., None] * np.array([1.0, 0.8, 0.7], np.float32)
    image = np.clip(image, 0, 1) ** (cam.gamma * rng.uniform(0.93, 1.07))
    image += np.float32(cam.noise) * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)

    grade = grade_from_lesions(lesions)
    return FundusSample(
        image=image,
        mask=mask,
        grade=grade,
        referable=grade >= 2,
        lesions=lesions,
        confounders=confounders,
        camera=camera_idx,
        fov=(float(cy), float(cx), float(R)),
        disc=(float(disc[0]), float(disc[1]), float(rd)),
        fovea=(float(fovea[0]), float(fovea[1])),
        stage=stage,
    )


def _draw_stage(config: FundusConfig, rng) -> int:
    p = np.asarray(config.stage_probs, float)
    return int(rng.choice(len(p), p=p / p.sum()))


def write_dataset(
    out_dir: str | Path, n_images: int, size: int = 512, seed: int = 0, config: FundusConfig | None = None
) -> Path:
    """Simulate ``n_images`` photographs into ``out_dir``: ``images/NAME.png`` (RGB uint8),
    ``lesions/NAME.tif`` (uint8 lesion type per pixel, 0-4) and ``labels.csv`` (columns
    ``image,grade,referable``; referable as 0/1). Image i depends only on (seed, i); every file
    is written atomically. Returns ``out_dir``."""
    from ..data.io import atomic_path, write_image

    out_dir = Path(out_dir)
    config = dataclasses.replace(config or FundusConfig(), size=int(size))
    rows = []
    for i in range(int(n_images)):
        sample = simulate(config, np.random.default_rng([int(seed), i]))
        name = f"fundus_{i:05d}"
        write_image(out_dir / "images" / f"{name}.png", sample.image)
        write_image(out_dir / "lesions" / f"{name}.tif", sample.mask)
        rows.append((name, sample.grade, int(sample.referable)))
    with atomic_path(out_dir / "labels.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "grade", "referable"])
            writer.writerows(rows)
    return out_dir
