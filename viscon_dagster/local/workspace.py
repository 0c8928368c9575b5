"""The project's code location as a workspace: the daemon loads it from its yaml (its own code server); this
process loads it in process to speak the webserver's GraphQL (what the UI does), without a second code server."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

PROJECT_WORKSPACE = Path(__file__).resolve().parent.parent.parent / "workspace.yaml"


class WorkspaceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Workspace:
    """One code location: `yaml` for the daemon (its own code server); loaded in this process for GraphQL,
    which saves starting a second code server just to submit."""
    yaml: Path
    location_name: str
    module_name: str | None = None
    python_file: str | None = None

    def in_process_target(self):
        from dagster._core.remote_origin import InProcessCodeLocationOrigin
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
        from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

        origin = LoadableTargetOrigin(executable_path=sys.executable, module_name=self.module_name,
                                      python_file=self.python_file, working_directory=str(self.yaml.parent))
        return InProcessWorkspaceLoadTarget(InProcessCodeLocationOrigin(origin, location_name=self.location_name))


    def definitions(self) -> dg.Definitions:
        """The code location's Definitions, loaded in this process: the same code (and so the same code versions)
        the daemon and the GraphQL queries see."""
        import importlib
        import importlib.util

        if self.module_name:
            module = importlib.import_module(self.module_name)
        else:
            spec = importlib.util.spec_from_file_location(f"viscon_workspace_{Path(self.python_file).stem}",
                                                          self.python_file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        found = [v for v in vars(module).values() if isinstance(v, dg.Definitions)]
        if len(found) != 1:
            raise WorkspaceError(f"{self.module_name or self.python_file}: expected one Definitions object, "
                                 f"found {len(found)}")
        return found[0]

    @staticmethod
    def from_yaml(path: Path) -> Workspace:
        """The first code location of a workspace.yaml (`python_module` or `python_file`)."""
        import yaml

        entry = yaml.safe_load(path.read_text())["load_from"][0]
        kind, spec = next(iter(entry.items()))
        if kind == "python_module":
            spec = {"module_name": spec} if isinstance(spec, str) else spec
            return Workspace(path.resolve(), spec.get("location_name", spec["module_name"]),
                             module_name=spec["module_name"])
        if kind == "python_file":
            spec = {"relative_path": spec} if isinstance(spec, str) else spec
            file = (path.parent / spec["relative_path"]).resolve()
            return Workspace(path.resolve(), spec.get("location_name", file.stem), python_file=str(file))
        raise WorkspaceError(f"{path}: only python_module and python_file code locations are supported here")


PROJECT = Workspace(PROJECT_WORKSPACE, "viscon_dagster", module_name="viscon_dagster.definitions")


def file_workspace(python_file: Path, folder: Path, location_name: str = "viscon_dagster") -> Workspace:
    """A workspace of one definitions file (tests, benchmarks), its yaml written into `folder`."""
    yaml = folder / "workspace.yaml"
    yaml.write_text(f"load_from:\n  - python_file:\n      relative_path: {python_file}\n"
                    f"      location_name: {location_name}\n")
    return Workspace(yaml, location_name, python_file=str(python_file))


@contextmanager
def graphql(instance: dg.DagsterInstance, workspace: Workspace) -> Iterator[Callable]:
    """`run(query, variables) -> data`: the webserver's GraphQL on this instance and code location."""
    from dagster._core.definitions.partitions.context import partition_loading_context
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster_graphql import __version__
    from dagster_graphql.cli import execute_query

    target = workspace.in_process_target()
    with WorkspaceProcessContext(instance, target, version=__version__, read_only=False) as context:
        for location in context.create_request_context().get_code_location_entries().values():
            if location.load_error:
                raise WorkspaceError(f"code location {location.origin.location_name} failed to load: "
                                     f"{location.load_error.message}")

        def run(query: str, variables: Mapping) -> dict:
            # ranges of dynamic partitions are resolved against the instance (GraphQL leaves it unset)
            with partition_loading_context(dynamic_partitions_store=instance):
                result = execute_query(context, query, variables)
            if result.get("errors"):
                raise WorkspaceError(f"GraphQL: {result['errors'][0].get('message')}")
            return result["data"]

        yield run
