"""The base of every config section (`Section`): field types checked, then the section's own
`validate`; and the rules, as data, for fields that have no effect (`Inert`, `inert`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from jaxlab.config.values import _check_types


@dataclass(frozen=True)
class Inert:
    """A rule: `field` has no effect on a run while every field named in `when` holds one of its values.

    Each section declares its rules as data (`Section.INERT`, built with `inert`) next to its
    fields; tests/test_bounds.py builds the training programs and evaluation data with two values
    of every declared field and checks they are identical (traced values and programs that may
    differ in form: the same numbers), and that with the condition off they differ, so the table
    cannot drift from the code that reads the fields.
    """

    field: str
    when: tuple[tuple[str, tuple[Any, ...]], ...]

    def holds(self, section: Any) -> bool:
        """Whether every field named in `when` holds one of its listed values in `section`."""
        return all(getattr(section, name) in values for name, values in self.when)


def inert(field_name: str, **when: tuple[Any, ...]) -> Inert:
    """`inert("momentum", name=("adam", "adamw"))`: momentum has no effect with those optimizers."""
    return Inert(field_name, tuple(when.items()))


class Section:
    """Mixin for config sections: a name for error messages and field-wise validation.

    `INERT`: rules for fields that have no effect given the section's other fields (`inert_fields`);
    `SWEEP_WIDE`: fields that hold one value for the whole sweep (how it runs, or analyses across
    its programs), field -> why. Neither may be swept: every point would give the same runs.
    `FIELD_DOCS`: field -> its meaning in one line (`field_doc`; `jaxlab run --show-config` prints
    it, and every field of jaxlab's own sections has one). `CHOICES`: field -> the values `validate`
    allows, for fields it checks against a list (`field_choices`; tests/test_show_config.py checks
    the table against `validate`).
    """

    section: ClassVar[str] = ""
    INERT: ClassVar[tuple[Inert, ...]] = ()
    SWEEP_WIDE: ClassVar[dict[str, str]] = {}
    FIELD_DOCS: ClassVar[dict[str, str]] = {}
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {}

    def _name(self, field_name: str) -> str:
        return f"{self.section}.{field_name}"

    def validate(self) -> None:  # overridden
        """Raise `ConfigError` for a value this section does not allow (called on construction,
        after the field types are checked); a subclass checks its own fields."""

    @classmethod
    def field_doc(cls, field_name: str) -> str:
        """The meaning of `field_name` from `FIELD_DOCS` (of this class or the nearest base that has
        it), or "" when none is given."""
        for klass in cls.__mro__:
            doc = vars(klass).get("FIELD_DOCS", {}).get(field_name)
            if doc:
                return doc
        return ""

    @classmethod
    def field_choices(cls, field_name: str) -> tuple[Any, ...] | None:
        """The values `validate` allows for `field_name` (`CHOICES`, of this class or a base), or None
        when it does not restrict the field to a list."""
        for klass in cls.__mro__:
            choices = vars(klass).get("CHOICES", {}).get(field_name)
            if choices is not None:
                return tuple(choices)
        return None

    def inert_fields(self) -> dict[str, str]:
        """Fields with no effect given this section's other values: field -> why (first rule that holds)."""
        out: dict[str, str] = {}
        for rule in self.INERT:
            if rule.field not in out and rule.holds(self):
                cond = ", ".join(f"{self._name(k)}={getattr(self, k)!r}" for k, _ in rule.when)
                out[rule.field] = f"{self._name(rule.field)} has no effect with {cond}"
        return out

    def __post_init__(self) -> None:
        _check_types(self)
        self.validate()
