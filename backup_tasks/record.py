"""Record: the base of every pydantic model in backup_tasks.

Each model's validator and serializer are built when it is first used, not when its module is imported
(`defer_build`). A command uses a handful of the ~40 models (`create` the settings, the metadata, its result);
building all of them at import was ~35 ms of every command's start-up, a twentieth of a backup of 1,000 small
tables. A model that is wrong still fails on its first use, which every model's tests reach.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    model_config = ConfigDict(defer_build=True)


# Default factories for the models' empty collections. Not the builtins `list` and `dict`: pydantic asks each factory
# for its signature (does it take the validated data?), and the signature of a builtin is parsed from its text with
# the tokenize module, whose first use compiles a large regular expression: 34 ms of every command's start-up.
def empty_list() -> list:
    return []


def empty_dict() -> dict:
    return {}
