"""The one root of the errors a user can fix: :class:`WorkbenchError`, a ``ValueError`` that carries the fix.

    raise ConfigError("batch_size=0 must be a whole number >= 1", fix="use e.g. 4096", param="batch_size")

Everything the package raises for a mistake in what it was given (a setting out of range, an unknown model or
hook, a corrupt or missing file, activations with NaNs, an SAE that does not fit the store) is a WorkbenchError:

- :class:`ConfigError`: a value passed in (an argument, a config field) that cannot work;
- :class:`InputError`: data read from disk or handed over (a file, a store, a tensor) that is unusable;
- the older families keep their names and homes and sit under these: ``StoreError``
  (:mod:`workbench.data.store_format`), ``AssetError`` (:mod:`workbench.data.assets`), ``TraitFileError``
  (:mod:`workbench.persona.traits`), ``CheckpointError`` (:mod:`workbench.sae.checkpoint`).

Messages name Python parameters (``batch_size``), never command-line flags: the command line
(:mod:`workbench.cli`) maps ``param`` and the ``name=`` words of the message to its flags when it prints one line
and exits with :attr:`WorkbenchError.exit_code` (2). Any other exception is a bug and keeps its traceback.
Being ``ValueError`` subclasses, all of them are still caught by ``except ValueError``.
"""
from __future__ import annotations

__all__ = ["ConfigError", "InputError", "WorkbenchError"]


class WorkbenchError(ValueError):
    """A mistake the user can fix. ``problem`` says what is wrong, ``fix`` what to do (it may be empty when the
    problem's own text already says it), ``param`` names the Python parameter at fault, if one is."""

    exit_code = 2

    def __init__(self, problem: str = "", fix: str = "", *, param: str | None = None):
        self.problem = str(problem)
        self.fix = str(fix or "")
        self.param = param
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The problem and its fix in one sentence."""
        if not self.fix:
            return self.problem
        return f"{self.problem.rstrip(' .;:')}; {self.fix}" if self.problem else self.fix

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # keep fix and param across pickling (torchrun, multiprocessing)
        return (_rebuild, (type(self), self.problem, self.fix, self.param, dict(self.__dict__)))


def _rebuild(cls, problem: str, fix: str, param: str | None, state: dict):
    err = cls.__new__(cls)
    WorkbenchError.__init__(err, problem, fix, param=param)
    err.__dict__.update(state)
    return err


class ConfigError(WorkbenchError):
    """A setting or argument that cannot work (out of range, unknown name, wrong type, a device that is absent)."""


class InputError(WorkbenchError):
    """Data that cannot be used: a missing, corrupt or foreign file, NaNs, shapes that do not fit together."""
