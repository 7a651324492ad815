"""SQ-GAN: semantically masked vector quantization with adaptive de-masking.

Transmitter (SqganTx): an encoder maps the image to a grid of latents (1/16 per
side); the Semantic-Aware Masking Module (SAMM) scores each latent's relevance
from the encoder's features normalised by the label map (SPADE) and a sigmoid;
every latent is vector-quantized against the image codebook. A second, smaller
branch encodes the label map (the segmenter's own) to its own grid and codebook.
The runtime keeps the top fraction of latents by score and sends their indices,
a 1-bit-per-latent mask, and every map index.

Receiver (SqganRx): the map indices -> the map decoder -> the receiver's label
map; the kept indices -> codebook vectors, the masked positions -> a learned mask
token; the Adaptive De-Masking module (ADM: residual blocks and mask-weighted
self-attention, conditioned on the map) infers the masked latents; a decoder
with SPADE normalisation from the label map regenerates the image.

Codebooks are EMA-updated (decay 0.99) with dead-code restarts; the commitment
weight is 0.25.

The label map's latents can be masked too (MapMasking, trained after the rest,
which stays frozen): a map SAMM scores each map latent from the map's codebook
indices (transmitter), and a map ADM infers the masked map indices from the kept
ones (receiver), so a level may send only the map latents that matter.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

N_CLASSES = 11
DOWNSAMPLE = 16             # image side / latent side, both branches


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    """long/uint8 [N,H,W] -> float [N,11,H,W]."""
    return F.one_hot(labels.long(), N_CLASSES).permute(0, 3, 1, 2).float()


class _Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1),
                                  nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x):
        return x + self.body(x)


class _Spade(nn.Module):
    """GroupNorm without affine, then per-pixel (1 + gamma, beta) from the label map (one-hot at full
    size, average-pooled by `factor`, the features' downsampling)."""

    def __init__(self, channels, hidden, factor=1):
        super().__init__()
        self.factor = factor
        self.norm = nn.GroupNorm(8, channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(N_CLASSES, hidden, 3, 1, 1), nn.ReLU())
        self.gamma_beta = nn.Conv2d(hidden, 2 * channels, 3, 1, 1)

    def forward(self, x, seg):
        if self.factor > 1:
            seg = F.avg_pool2d(seg, self.factor)
        gamma, beta = self.gamma_beta(self.shared(seg)).chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class _SpadeRes(nn.Module):
    def __init__(self, cin, cout, hidden, factor=1):
        super().__init__()
        self.n1, self.c1 = _Spade(cin, hidden, factor), nn.Conv2d(cin, cout, 3, 1, 1)
        self.n2, self.c2 = _Spade(cout, hidden, factor), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, seg):
        h = self.c1(F.silu(self.n1(x, seg)))
        return self.skip(x) + self.c2(F.silu(self.n2(h, seg)))


def _down_stack(cin, widths):
    layers, c = [], cin
    for w in widths:
        layers += [nn.Conv2d(c, w, 4, 2, 1), _Res(w)]
        c = w
    return nn.Sequential(*layers)


class VectorQuantizer(nn.Module):
    """Nearest-codeword quantization; EMA codebook updates and dead-code restarts while training."""

    def __init__(self, codes, dim, decay=0.99, restart_below=0.03):
        super().__init__()
        self.codes, self.dim, self.decay, self.restart_below = codes, dim, decay, restart_below
        self.register_buffer("embed", torch.randn(codes, dim) * 0.1)
        self.register_buffer("cluster_size", torch.ones(codes))
        self.register_buffer("embed_sum", self.embed.clone())

    def indices(self, z):
        """[N,D,h,w] -> long [N,h,w]."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)
        dist = (flat ** 2).sum(1, keepdim=True) - 2 * flat @ self.embed.t() + (self.embed ** 2).sum(1)[None]
        return dist.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, idx):
        """long [N,h,w] -> [N,D,h,w]."""
        return F.embedding(idx, self.embed).permute(0, 3, 1, 2)

    def forward(self, z):
        """-> (straight-through quantized z, indices, commitment loss); EMA update when training."""
        idx = self.indices(z)
        q = self.lookup(idx)
        if self.training:
            with torch.no_grad():
                flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)
                hot = F.one_hot(idx.view(-1), self.codes).type(flat.dtype)
                self.cluster_size.mul_(self.decay).add_(hot.sum(0), alpha=1 - self.decay)
                self.embed_sum.mul_(self.decay).add_(hot.t() @ flat, alpha=1 - self.decay)
                n = self.cluster_size.sum()
                size = (self.cluster_size + 1e-5) / (n + self.codes * 1e-5) * n
                self.embed.copy_(self.embed_sum / size[:, None])
                dead = self.cluster_size < self.restart_below
                if dead.any():      # restart unused codewords at encoder outputs of this batch
                    pick = flat[torch.randint(0, len(flat), (int(dead.sum()),), device=flat.device)]
                    self.embed[dead] = pick
                    self.embed_sum[dead] = pick
                    self.cluster_size[dead] = 1.0
        commit = F.mse_loss(z, q.detach())
        return z + (q - z).detach(), idx, commit


class Samm(nn.Module):
    """Relevance score in (0, 1) per latent from the encoder's features under SPADE from the map."""

    def __init__(self, channels, hidden):
        super().__init__()
        self.norm = _Spade(channels, hidden, DOWNSAMPLE)
        self.head = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.SiLU(), nn.Conv2d(channels, 1, 1))

    def logits(self, features, seg):
        return self.head(F.silu(self.norm(features, seg)))[:, 0]

    def forward(self, features, seg):
        return torch.sigmoid(self.logits(features, seg))


class _MaskedAttention(nn.Module):
    """Self-attention over the latent grid whose keys are weighted by the mask: a masked latent (a
    mask token) is attended to less than a received one."""

    def __init__(self, c, heads=4):
        super().__init__()
        self.heads, self.norm = heads, nn.GroupNorm(8, c)
        self.qkv, self.proj = nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)
        self.mask_bias = nn.Parameter(torch.tensor(2.0))

    def forward(self, x, mask):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        logits = torch.einsum("nhdi,nhdj->nhij", q, k) / math.sqrt(c // self.heads)
        logits = logits + self.mask_bias * mask.reshape(n, 1, 1, h * w)
        out = torch.einsum("nhij,nhdj->nhdi", logits.softmax(-1), v).reshape(n, c, h, w)
        return x + self.proj(out)


class Adm(nn.Module):
    """Adaptive de-masking: [received latents with mask tokens, mask, map] -> every latent."""

    def __init__(self, dim, channels, hidden):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(dim))
        self.inp = nn.Conv2d(dim + 1, channels, 3, 1, 1)
        self.res1 = _SpadeRes(channels, channels, hidden, DOWNSAMPLE)
        self.attn1 = _MaskedAttention(channels)
        self.res2 = _SpadeRes(channels, channels, hidden, DOWNSAMPLE)
        self.attn2 = _MaskedAttention(channels)
        self.out = nn.Conv2d(channels, dim, 1)

    def forward(self, q, mask, seg):
        m = mask[:, None]
        x = m * q + (1 - m) * self.token[None, :, None, None]
        h = self.res1(self.inp(torch.cat([x, m], 1)), seg)
        h = self.res2(self.attn1(h, mask), seg)
        filled = self.out(self.attn2(h, mask))
        return m * q + (1 - m) * filled, filled


class SQGAN(nn.Module):
    """The whole model (training); SqganTx and SqganRx are its two ends for export."""

    def __init__(self, width=32, dim=64, codes=1024, map_dim=32, map_codes=128, hidden=32):
        super().__init__()
        self.config = {"width": width, "dim": dim, "codes": codes, "map_dim": map_dim, "map_codes": map_codes,
                       "hidden": hidden}
        c = width
        self.encoder = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1), _down_stack(c, [c, 2 * c, 3 * c, 4 * c]))
        self.to_latent = nn.Conv2d(4 * c, dim, 1)
        self.samm = Samm(4 * c, hidden)
        self.vq = VectorQuantizer(codes, dim)
        self.map_encoder = nn.Sequential(_down_stack(N_CLASSES, [16, 32, 64, 64]), nn.Conv2d(64, map_dim, 1))
        self.map_vq = VectorQuantizer(map_codes, map_dim)
        self.map_decoder = nn.Sequential(
            nn.Conv2d(map_dim, 64, 3, 1, 1), _Res(64), _Res(64),
            nn.ConvTranspose2d(64, 64, 4, 2, 1), _Res(64), nn.ConvTranspose2d(64, 32, 4, 2, 1), _Res(32),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), _Res(32), nn.ConvTranspose2d(32, 16, 4, 2, 1),
            nn.GroupNorm(8, 16), nn.SiLU(), nn.Conv2d(16, N_CLASSES, 3, 1, 1))
        self.adm = Adm(dim, 4 * c, hidden)
        widths = [4 * c, 3 * c, 2 * c, c, c]
        self.dec_in = nn.Conv2d(dim, widths[0], 3, 1, 1)
        self.dec_mid = _SpadeRes(widths[0], widths[0], hidden, DOWNSAMPLE)
        self.dec = nn.ModuleList(_SpadeRes(widths[i], widths[i + 1], hidden, DOWNSAMPLE >> (i + 1))
                                 for i in range(4))
        self.dec_out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, 3, 3, 1, 1))

    # transmitter
    def encode(self, x, seg):
        """x [N,3,H,W] in [0,1], seg one-hot [N,11,H,W] -> (latents z_e, SAMM scores [N,h,w])."""
        f = self.encoder(2 * x - 1)
        return self.to_latent(f), self.samm(f, seg)

    def encode_map(self, seg):
        return self.map_encoder(seg)

    # receiver
    def decode_map(self, map_q):
        """-> map logits [N,11,H,W]."""
        return self.map_decoder(map_q)

    def decode(self, q, mask, seg):
        """Received latents (any value where mask = 0), mask [N,h,w] in {0,1}, the receiver's label map
        one-hot -> (image [N,3,H,W] in [0,1], ADM's estimate of every latent)."""
        z, filled = self.adm(q, mask, seg)
        h = self.dec_mid(self.dec_in(z), seg)
        for block in self.dec:
            h = block(F.interpolate(h, scale_factor=2, mode="nearest"), seg)
        return torch.sigmoid(self.dec_out(h)), filled


def top_mask(scores: torch.Tensor, fraction) -> torch.Tensor:
    """{0,1} mask [N,h,w] keeping the ceil(fraction x h x w) highest scores of each image (fraction a
    float or a [N] tensor)."""
    n = scores.shape[0]
    flat = scores.reshape(n, -1)
    frac = torch.as_tensor(fraction, dtype=torch.float32).expand(n)
    k = torch.ceil(frac * flat.shape[1]).long().clamp(1, flat.shape[1])
    ranks = flat.argsort(1, descending=True).argsort(1)
    return (ranks < k[:, None]).float().view_as(scores)


class MapMasking(nn.Module):
    """Masking of the label-map stream, on its codebook indices [N,h,w].

    samm_logits: the map SAMM's relevance logit per map latent from the full index grid (transmitter).
    fill_logits: the map ADM's logits over the map codebook per latent from the kept indices (a mask token
    elsewhere) and the mask (receiver); fill keeps the sent indices and takes the argmax elsewhere.
    """

    def __init__(self, map_codes=128, channels=64):
        super().__init__()
        self.config = {"map_codes": map_codes, "channels": channels}
        c = channels
        self.samm_embed = nn.Embedding(map_codes, c)
        self.samm = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), _Res(c), _Res(c), nn.GroupNorm(8, c), nn.SiLU(),
                                  nn.Conv2d(c, 1, 1))
        self.adm_embed = nn.Embedding(map_codes + 1, c)      # the last row is the mask token
        self.adm_in = nn.Conv2d(c + 1, c, 3, 1, 1)
        self.adm_res1, self.adm_res2, self.adm_res3 = _Res(c), _Res(c), _Res(c)
        self.attn1, self.attn2 = _MaskedAttention(c), _MaskedAttention(c)
        self.adm_out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, map_codes, 1))

    def samm_logits(self, map_indices):
        return self.samm(self.samm_embed(map_indices).permute(0, 3, 1, 2))[:, 0]

    def fill_logits(self, map_indices, mask):
        tokens = torch.where(mask > 0.5, map_indices, torch.full_like(map_indices, self.config["map_codes"]))
        h = self.adm_in(torch.cat([self.adm_embed(tokens).permute(0, 3, 1, 2), mask[:, None]], 1))
        h = self.attn1(self.adm_res1(h), mask)
        h = self.attn2(self.adm_res2(h), mask)
        return self.adm_out(self.adm_res3(h))

    def fill(self, map_indices, mask):
        return torch.where(mask > 0.5, map_indices, self.fill_logits(map_indices, mask).argmax(1))


class MapSammTx(nn.Module):
    """Export wrapper: map_indices -> map SAMM relevance in (0, 1)."""

    def __init__(self, model: MapMasking):
        super().__init__()
        self.m = model

    def forward(self, map_indices):
        return torch.sigmoid(self.m.samm_logits(map_indices))


class MapAdmRx(nn.Module):
    """Export wrapper: (map_indices, map_mask) -> every map index (the sent ones kept)."""

    def __init__(self, model: MapMasking):
        super().__init__()
        self.m = model

    def forward(self, map_indices, map_mask):
        return self.m.fill(map_indices, map_mask)


PROBE_FIRST = 0.5      # share of a refined map mask taken from the map SAMM's top scores
PROBE_ROUNDS = 8       # rounds that add the latents the receiver's map gets most wrong


class MapProbeTx(nn.Module):
    """Export wrapper (transmitter): (map_indices, map_mask, the sent map [N,H,W]) -> per map latent
    [N,h,w], the share of its 16x16 pixels that the receiver's map (map ADM fill, map decoder) gets
    wrong with this mask."""

    def __init__(self, masking: MapMasking, model: SQGAN):
        super().__init__()
        self.mm, self.m = masking, model

    def forward(self, map_indices, map_mask, labels):
        filled = self.mm.fill(map_indices, map_mask)
        decoded = self.m.decode_map(self.m.map_vq.lookup(filled)).argmax(1)
        return F.avg_pool2d((decoded != labels).float()[:, None], DOWNSAMPLE)[:, 0]


def refined_map_mask(scores, probe, count: int, first=PROBE_FIRST, rounds=PROBE_ROUNDS):
    """Map mask [N,h,w] of `count` latents per image: the map SAMM's top round(first x count), then in
    `rounds` rounds the masked latents where probe(mask) (MapProbeTx's error) is highest, ties to the
    higher score (the transmitter runs the receiver's map ADM and decoder to see what it would miss)."""
    n = scores.shape[0]
    flat = scores.reshape(n, -1)
    mask = torch.zeros_like(flat)
    k0 = max(1, int(round(count * first)))
    mask.scatter_(1, flat.argsort(dim=1, descending=True, stable=True)[:, :k0], 1.0)
    left = count - k0
    for r in range(rounds):
        if left <= 0:
            break
        step = -(-left // (rounds - r))
        value = probe(mask.view_as(scores)).reshape(n, -1) + 1e-3 * flat
        value = torch.where(mask > 0.5, torch.full_like(value, -1e9), value)
        mask.scatter_(1, value.argsort(dim=1, descending=True, stable=True)[:, :step], 1.0)
        left -= step
    return mask.view_as(scores)


class SqganTx(nn.Module):
    """Export wrapper: (image, one-hot map) -> (indices, scores, map_indices)."""

    def __init__(self, model: SQGAN):
        super().__init__()
        self.m = model

    def forward(self, image, labels):
        z, scores = self.m.encode(image, labels)
        return self.m.vq.indices(z), scores, self.m.map_vq.indices(self.m.encode_map(labels))


class SqganRx(nn.Module):
    """Export wrapper: (indices, mask, map_indices) -> (image, the receiver's label map)."""

    def __init__(self, model: SQGAN):
        super().__init__()
        self.m = model

    def forward(self, indices, mask, map_indices):
        logits = self.m.decode_map(self.m.map_vq.lookup(map_indices))
        labels = logits.argmax(1)
        image, _ = self.m.decode(self.m.vq.lookup(indices), mask, one_hot(labels))
        return image, labels


class PatchDiscriminator(nn.Module):
    """PatchGAN: conv 4x4 stride 2 stages, LeakyReLU; returns (patch logits, stage features)."""

    def __init__(self, width=32):
        super().__init__()
        w = width
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3, w, 4, 2, 1), nn.LeakyReLU(0.2)),
            nn.Sequential(nn.Conv2d(w, 2 * w, 4, 2, 1), nn.GroupNorm(8, 2 * w), nn.LeakyReLU(0.2)),
            nn.Sequential(nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.GroupNorm(8, 4 * w), nn.LeakyReLU(0.2))])
        self.head = nn.Conv2d(4 * w, 1, 3, 1, 1)

    def forward(self, x):
        feats, h = [], 2 * x - 1
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return self.head(h), feats
