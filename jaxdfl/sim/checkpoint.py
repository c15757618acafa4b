"""Checkpoints of the simulation state with orbax-checkpoint, one step per completed round."""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp

from jaxdfl.errors import warn
from jaxdfl.sim.state import SimState


class Checkpointer:
    """Saves and restores :class:`SimState` under ``directory`` (keeps the newest ``max_to_keep``)."""

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(Path(directory).absolute(), options=options,
                                              item_handlers=ocp.StandardCheckpointHandler())

    def save(self, round_: int, state: SimState) -> None:
        """Save the state after ``round_`` completed rounds (no-op if that round is already saved)."""
        if self._manager.latest_step() == round_:
            return
        self._manager.save(round_, args=ocp.args.StandardSave(state))
        self._manager.wait_until_finished()

    def latest_round(self) -> int | None:
        return self._manager.latest_step()

    def rounds(self) -> list[int]:
        """The saved rounds, oldest first."""
        return sorted(self._manager.all_steps())

    def restore(self, like: SimState, round_: int | None = None) -> tuple[int, SimState]:
        """Restore into the structure, shapes and shardings of ``like``; the newest round by default.

        A checkpoint written before :class:`SimState` gained a field restores too when ``like`` holds nothing
        in that field (a feature the run does not use): the field keeps ``like``'s empty value."""
        round_ = self._manager.latest_step() if round_ is None else round_
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        saved = self._manager.item_metadata(round_).tree
        missing = [f for f in like._fields if f not in saved]
        if not missing:
            return round_, self._manager.restore(round_, args=ocp.args.StandardRestore(target))
        if any(jax.tree.leaves(getattr(like, f)) for f in missing):
            raise ValueError(f"the checkpoint lacks the state's fields {missing}, which this run uses")
        fields = {f: getattr(target, f) for f in like._fields if f in saved}
        return round_, like._replace(**self._manager.restore(round_, args=ocp.args.StandardRestore(fields)))

    def restore_newest(self, like: SimState, upto: int | None = None) -> tuple[int, SimState] | None:
        """The newest checkpoint (of a round ≤ ``upto``, if given) that restores, skipping with a warning any a
        crash left damaged or a later jaxdfl cannot read; None when none does."""
        for round_ in reversed(self.rounds()):
            if upto is not None and round_ > upto:
                warn(f"checkpoint of round {round_} is past the metrics on file (round {upto}); trying an older one")
                continue
            try:
                return self.restore(like, round_)
            except Exception as err:  # orbax raises many kinds of error for a damaged step
                warn(f"checkpoint of round {round_} does not restore ({type(err).__name__}: "
                     f"{str(err).splitlines()[0] if str(err) else ''}); trying an older one")
        return None

    def close(self) -> None:
        self._manager.close()
