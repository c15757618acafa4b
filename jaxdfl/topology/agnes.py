"""Paper A's cluster topology (A §IV-C): agglomerative (AGNES) clustering under a collision cap and
the power/delay budget.

Start from singletons. Two clusters may merge when (i) the merged cluster's parameter collision rate A(19)
is at most S_max in every layer, and (ii) every member can send its message to every other member within Γ
at mean fading with total power ≤ p_max (A(25) with ‖u‖ = |c| − 1). Of the feasible pairs, merge the one
with the lowest merged collision (ties: the smaller mean distance between their members); repeat until no
pair is feasible or one cluster is left.

Host-side numpy: the clustering runs once, before training. Each merge updates one row of the pair tables,
so a clustering costs O(M²·L) for M devices and L layers.
"""

from __future__ import annotations

import numpy as np

from jaxdfl.network.d2d import min_power


def agnes_clusters(sparsity, positions, *, s_max: float, p_max: float, delay_bound: float, bandwidth: float,
                   bits, noise: float, path_loss_exp: float, min_distance: float = 1.0) -> np.ndarray:
    """Cluster labels by AGNES under collision and power constraints.

    Args:
      sparsity: ``[devices, layers]`` each device's density s (share of B positions it trains) per layer.
      positions: ``[devices, 2]`` positions (m).
      s_max: the collision cap S_max, per layer.
      p_max, delay_bound, bandwidth, noise, path_loss_exp: the link budget (see
        :class:`jaxdfl.network.d2d.LinkBudget`).
      bits: ``[devices]`` each device's message size per round.
      min_distance: floor on distances, as in :func:`jaxdfl.network.d2d.distances`.

    Returns:
      ``[devices]`` int cluster labels 0..K−1, numbered by each cluster's first member.
    """
    s = np.asarray(sparsity, np.float64)
    if s.ndim == 1:
        s = s[:, None]
    pos = np.asarray(positions, np.float64)
    bits = np.broadcast_to(np.asarray(bits, np.float64), (len(s),))
    m = len(s)
    dist = np.maximum(np.linalg.norm(pos[:, None] - pos[None], axis=-1), min_distance)
    cost = noise * dist ** path_loss_exp  # σ²/h at mean fading (E[ρ] = 1)
    np.fill_diagonal(cost, 0.0)

    def factor(n_links):  # 2^(bits·‖u‖/(WΓ)) − 1, [devices, ...], from A(25) with σ²/h = 1
        return np.asarray(min_power(bits.reshape(-1, *([1] * (np.ndim(n_links) - 1))), n_links, bandwidth,
                                    delay_bound, 1.0, 1.0), np.float64)

    # per cluster: Π(1 − s) and Σ_j s_j Π_{z≠j}(1 − s_z), per layer; a merge multiplies and cross-multiplies
    none_active, one_active = 1.0 - s, s.copy()
    size = np.ones(m)
    members = np.eye(m, dtype=bool)  # [cluster, device]
    alive = np.ones(m, bool)
    reach = cost.copy()  # [device, cluster]: Σ σ²/h from the device to the cluster's members
    dist_sum = dist * (1 - np.eye(m))  # [cluster, cluster]: Σ of member-to-member distances

    def merged_collision(a):  # [clusters]: max over layers of A(19) for a ∪ c
        p = none_active[a] * none_active
        e = one_active[a] * none_active + one_active * none_active[a]
        return np.max(1.0 - p - e, axis=1)

    def merged_power(a):  # [clusters]: the most power any member of a ∪ c needs
        n = size[a] + size - 1  # links each member serves
        inside_a = members[a]
        need_a = factor(n[None, :])[inside_a] * (reach[inside_a, a][:, None] + reach[inside_a])  # [|a|, C]
        owner = members.argmax(0)  # each device's cluster
        need_c = factor(n[owner]) * (reach[np.arange(m), owner] + reach[:, a])  # [devices], for a ∪ own cluster
        worst = np.full(m, -np.inf)
        np.maximum.at(worst, owner[~inside_a], need_c[~inside_a])
        return np.maximum(need_a.max(0), worst)

    collision = np.stack([merged_collision(a) for a in range(m)])
    single = factor(np.ones(m))[:, None] * cost  # two singletons: each sends to the other over one link
    power = np.maximum(single, single.T)
    while alive.sum() > 1:
        pair_ok = (collision <= s_max + 1e-12) & (power <= p_max * (1 + 1e-9)) & alive[:, None] & alive[None, :]
        pair_ok &= np.triu(np.ones((m, m), bool), 1)
        if not pair_ok.any():
            break
        a_idx, b_idx = np.nonzero(pair_ok)
        mean_dist = dist_sum[a_idx, b_idx] / (size[a_idx] * size[b_idx])
        best = np.lexsort((mean_dist, collision[a_idx, b_idx]))[0]
        a, b = a_idx[best], b_idx[best]
        one_active[a] = one_active[a] * none_active[b] + one_active[b] * none_active[a]
        none_active[a] = none_active[a] * none_active[b]
        members[a] |= members[b]
        members[b] = False
        size[a] += size[b]
        reach[:, a] += reach[:, b]
        dist_sum[a] += dist_sum[b]
        dist_sum[:, a] = dist_sum[a]
        alive[b] = False
        collision[a], power[a] = merged_collision(a), merged_power(a)
        collision[:, a], power[:, a] = collision[a], power[a]
        collision[b] = collision[:, b] = power[b] = power[:, b] = np.inf
    owner = members[alive].argmax(0)
    _, labels = np.unique(owner, return_inverse=True)  # alive clusters in order of their first member
    return labels.astype(np.int32)
