"""Label schemas: which tasks a dataset provides and what kind each one is.

Attribute models build their heads from a schema, so every reader declares one. Label values
inside a `SampleRecord` follow the task kind:
- binary: int 0 or 1 (CelebA's -1/+1 become 0/1);
- categorical: int class index into `Task.classes`;
- ordinal: int index into `Task.classes` (ordered groups, e.g. Adience's 8 age groups);
- regression: float, expected inside `Task.value_range`.
A task a sample has no label for is simply absent from that sample's `labels` dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Iterator

__all__ = ["TaskKind", "Task", "LabelSchema"]


class TaskKind(str, Enum):
    BINARY = "binary"
    CATEGORICAL = "categorical"
    ORDINAL = "ordinal"
    REGRESSION = "regression"


@dataclass(frozen=True)
class Task:
    """One prediction target. `classes` names the categories of categorical/ordinal tasks
    (for binary tasks it is ('no', 'yes') unless given); `value_range` bounds a regression."""

    name: str
    kind: TaskKind
    classes: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", TaskKind(self.kind))
        if self.kind is TaskKind.BINARY and not self.classes:
            object.__setattr__(self, "classes", ("no", "yes"))
        if self.kind in (TaskKind.CATEGORICAL, TaskKind.ORDINAL) and len(self.classes) < 2:
            raise ValueError(f"task {self.name!r}: a {self.kind.value} task needs at least 2 classes")
        if self.kind is TaskKind.BINARY and len(self.classes) != 2:
            raise ValueError(f"task {self.name!r}: a binary task has exactly 2 classes")
        if self.kind is TaskKind.REGRESSION and self.value_range is not None:
            low, high = self.value_range
            if not low < high:
                raise ValueError(f"task {self.name!r}: value_range must be (low, high) with low < high")

    @property
    def num_classes(self) -> int:
        """Number of outputs a classifier needs (0 for regression)."""
        return 0 if self.kind is TaskKind.REGRESSION else len(self.classes)

    def validate(self, value: int | float) -> None:
        """Raise ValueError when `value` is not a legal label for this task."""
        if self.kind is TaskKind.REGRESSION:
            value = float(value)
            if value != value:
                raise ValueError(f"{self.name}: NaN label")
            if self.value_range is not None and not (self.value_range[0] <= value <= self.value_range[1]):
                raise ValueError(f"{self.name}: {value} outside {self.value_range}")
            return
        if isinstance(value, bool) or int(value) != value or not 0 <= int(value) < len(self.classes):
            raise ValueError(f"{self.name}: {value!r} is not a class index in 0..{len(self.classes) - 1}")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "classes": list(self.classes),
            "value_range": list(self.value_range) if self.value_range else None,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Task":
        return cls(
            name=data["name"],
            kind=TaskKind(data["kind"]),
            classes=tuple(data.get("classes") or ()),
            value_range=tuple(data["value_range"]) if data.get("value_range") else None,
            description=data.get("description", ""),
        )


@dataclass(frozen=True)
class LabelSchema:
    """An ordered set of tasks, looked up by name."""

    tasks: tuple[Task, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        names = [t.name for t in self.tasks]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"duplicate task names in schema: {sorted(duplicates)}")

    @classmethod
    def binary(cls, names: Iterable[str], description: str = "") -> "LabelSchema":
        return cls(tuple(Task(n, TaskKind.BINARY, description=description) for n in names))

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __contains__(self, name: object) -> bool:
        return any(t.name == name for t in self.tasks)

    def __getitem__(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"no task {name!r} in schema; tasks: {self.names}")

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def of_kind(self, kind: TaskKind | str) -> list[Task]:
        kind = TaskKind(kind)
        return [t for t in self.tasks if t.kind is kind]

    def validate(self, labels: dict[str, int | float]) -> None:
        for name, value in labels.items():
            self[name].validate(value)

    def merged(self, other: "LabelSchema") -> "LabelSchema":
        """Union of two schemas; a shared name must describe the same task."""
        tasks = list(self.tasks)
        for task in other.tasks:
            if task.name in self:
                mine = self[task.name]
                if (mine.kind, mine.classes) != (task.kind, task.classes):
                    raise ValueError(f"task {task.name!r} differs between schemas: {mine} vs {task}")
                continue
            tasks.append(task)
        return LabelSchema(tuple(tasks))

    def to_dict(self) -> list[dict]:
        return [t.to_dict() for t in self.tasks]

    @classmethod
    def from_dict(cls, data: list[dict]) -> "LabelSchema":
        return cls(tuple(Task.from_dict(d) for d in data))
