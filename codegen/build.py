"""From compiled descriptors and the manifest to the intermediate model (and its checks)."""

from __future__ import annotations

import builtins
import difflib
import keyword
import os
import re
from collections.abc import Sequence

from google.protobuf import descriptor_pb2

from msuite.spec import Diagnostic, Manifest, format_path

from . import model
from .protoc import CodegenError, Compiled

__all__ = ["build_project", "fix_imports", "module_alias", "module_of"]

_RESOURCE = re.compile(r"^/(?P<service>[A-Za-z_][\w.]*)/(?P<method>[^/]+)$")
_GENERATED_NAMES = {"wiring", "events"}
_RESERVED_EVENT_NAMES = {"Event", "ClassVar", "EVENTS", "datetime"}
_FIELD_TYPE_NAMES = {"str", "int", "float", "bool", "bytes", "datetime", "list", "None"}
_RESERVED_EVENT_FIELDS = {"topic", "meta", "to_bytes", "from_bytes"} | {
    name for name in dir(__import__("pydantic").BaseModel) if not name.startswith("__")
}
# descriptor field numbers, for locating problems with SourceCodeInfo
_SERVICE, _METHOD, _NAME, _OPTIONS = 6, 2, 1, 4


def module_of(proto_name: str, suffix: str) -> str:
    """``a/b/x.proto`` -> ``a.b.x_pb2`` (with ``suffix`` ``_pb2``), as protoc names it."""
    return proto_name[: -len(".proto")].replace("/", ".").replace("-", "_") + suffix


def module_alias(module: str) -> str:
    """An import alias unique per module: protoc's own scheme (``_`` doubled, ``.`` -> ``_dot_``)."""
    return module.replace("_", "__").replace(".", "_dot_")


def snake_case(name: str) -> str:
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", words).lower()


def _python_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def fix_imports(path: str, text: str, generated: set[str]) -> str:
    """Make imports between generated modules relative, so the output folder is a package."""
    dots = "." * (path.count("/") + 1)
    out = []
    for original in text.splitlines(keepends=True):
        line = original
        stripped = original.rstrip("\n")
        match = re.match(r"^(\s*)import ([\w.]+) as (\w+)$", stripped)
        if match and match[2] in generated:
            parent, _, leaf = match[2].rpartition(".")
            line = f"{match[1]}from {dots}{parent} import {leaf} as {match[3]}\n"
        else:
            match = re.match(r"^(\s*)from ([\w.]+) import (.+)$", stripped)
            if match:
                module, names = match[2], match[3]
                first = names.split(" as ")[0].split(",")[0].strip()
                if module in generated or f"{module}.{first}" in generated:
                    line = f"{match[1]}from {dots}{module} import {names}\n"
        out.append(line)
    return "".join(out)


class _Locator:
    """Positions in the protos (from protoc's SourceCodeInfo) and in the manifest."""

    def __init__(self, manifest: Manifest, compiled: Compiled) -> None:
        self.manifest = manifest
        self.paths = {s.name: s.path for s in compiled.sources}
        self.files = {f.name: f for f in compiled.descriptors.file}

    def proto(self, file: str, path: Sequence[int], message: str) -> Diagnostic:
        line = column = 1
        descriptor = self.files.get(file)
        if descriptor is not None:
            for location in descriptor.source_code_info.location:
                if list(location.path) == list(path):
                    line, column = location.span[0] + 1, location.span[1] + 1
                    break
        where = self.paths.get(file)
        shown = os.path.relpath(where, self.manifest.base_dir) if where else file
        return Diagnostic(shown, line, column, "proto", message)

    def manifest_at(self, path: tuple[str | int, ...], message: str, *, key: bool = False) -> Diagnostic:
        source = self.manifest.source
        if source is None:
            return Diagnostic("<python>", 0, 0, format_path(path), message)
        pos = source.locate(path, prefer_key=key)
        return Diagnostic(source.file, pos.line, pos.column, format_path(path), message)


def _check_modules(compiled: Compiled, where: _Locator) -> list[Diagnostic]:
    """Every user proto must give an importable module that hides nothing generated.

    (Two protos giving the same module are refused earlier, by protoc.compile_protos:
    protoc itself would fail on them.)"""
    problems = []
    for source in compiled.sources:
        module = module_of(source.name, "_pb2")
        parts = module.split(".")
        if not all(_python_name(p) for p in parts):
            problems.append(
                where.proto(
                    source.name,
                    [],
                    f"gives the Python module {module}, which Python cannot import: "
                    "use folder and file names that are identifiers (no keywords, no leading digits)",
                )
            )
        elif len(parts) > 1 and parts[0] in _GENERATED_NAMES:
            problems.append(
                where.proto(
                    source.name,
                    [],
                    f"its folder {parts[0]}/ would hide the generated {parts[0]}.py: "
                    "move it under another folder",
                )
            )
    return problems


def _http_routes(
    method: descriptor_pb2.MethodDescriptorProto, service: str, problem: list[str]
) -> tuple[model.Route, ...]:
    from google.api import annotations_pb2

    options = descriptor_pb2.MethodOptions.FromString(method.options.SerializeToString())
    if not options.HasExtension(annotations_pb2.http):
        return (model.Route("POST", f"/{service}/{method.name}", "*", "", annotated=False),)
    rule = options.Extensions[annotations_pb2.http]
    routes = []
    for r in [rule, *rule.additional_bindings]:
        pattern = r.WhichOneof("pattern")
        if pattern is None:
            problem.append("a google.api.http rule needs a verb: get, put, post, delete, patch or custom")
            continue
        if pattern == "custom":
            verb, path = r.custom.kind.upper(), r.custom.path
        else:
            verb, path = pattern.upper(), getattr(r, pattern)
        routes.append(model.Route(verb, path, r.body, r.response_body, annotated=True))
    return tuple(routes)


def _services(
    manifest: Manifest, compiled: Compiled, where: _Locator
) -> tuple[list[model.Service], list[Diagnostic]]:
    problems: list[Diagnostic] = []
    by_name: dict[str, tuple[descriptor_pb2.ServiceDescriptorProto, str, int]] = {}
    for file in compiled.descriptors.file:
        for index, service in enumerate(file.service):
            full = f"{file.package}.{service.name}" if file.package else service.name
            by_name[full] = (service, file.name, index)
    services: list[model.Service] = []
    accessors: dict[str, str] = {}
    for name, declared in manifest.services.items():
        found = by_name.get(name)
        declared_file = next(
            (
                s.name
                for s in compiled.sources
                if os.path.samefile(s.path, manifest.base_dir / declared.proto)
            ),
            None,
        )
        if found is None or found[1] != declared_file:
            near = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f"; did you mean '{near[0]}'?" if near and near[0] != name else ""
            elsewhere = f" (it is in {found[1]})" if found is not None else ""
            problems.append(
                where.manifest_at(
                    ("services", name),
                    f"{declared.proto} declares no service {name}{elsewhere}{hint}",
                    key=True,
                )
            )
            continue
        descriptor, proto_name, service_index = found
        accessor = snake_case(descriptor.name)
        if keyword.iskeyword(accessor):
            accessor += "_"
        if accessor in accessors:
            problems.append(
                where.manifest_at(
                    ("services", name),
                    f"generates the same Python name '{accessor}' as {accessors[accessor]}",
                    key=True,
                )
            )
            continue
        accessors[accessor] = name
        methods = []
        for method_index, m in enumerate(descriptor.method):
            location = [_SERVICE, service_index, _METHOD, method_index]
            if not _python_name(m.name):
                problems.append(
                    where.proto(
                        proto_name,
                        [*location, _NAME],
                        f"method {m.name} is not a usable Python name: rename it",
                    )
                )
                continue
            rule_problems: list[str] = []
            routes = _http_routes(m, name, rule_problems)
            problems += [where.proto(proto_name, [*location, _OPTIONS], p) for p in rule_problems]
            methods.append(
                model.Method(
                    m.name,
                    m.input_type.lstrip("."),
                    m.output_type.lstrip("."),
                    m.client_streaming,
                    m.server_streaming,
                    routes,
                )
            )
        grpc_module = module_of(proto_name, "_pb2_grpc")
        services.append(
            model.Service(
                name,
                descriptor.name,
                declared.impl,
                grpc_module,
                module_alias(grpc_module),
                accessor,
                tuple(methods),
            )
        )
    return services, problems


def _acl(
    manifest: Manifest, compiled: Compiled, where: _Locator
) -> tuple[list[model.AclRule], list[Diagnostic]]:
    methods: dict[str, list[str]] = {}
    for file in compiled.descriptors.file:
        for declared in file.service:
            full = f"{file.package}.{declared.name}" if file.package else declared.name
            methods[full] = [m.name for m in declared.method]
    rules: list[model.AclRule] = []
    problems: list[Diagnostic] = []
    if manifest.auth is None:
        return rules, problems
    for resource, role in manifest.auth.acl.items():
        rules.append(model.AclRule(resource, role))
        match = _RESOURCE.match(resource)
        if match is None:
            continue
        service, method = match["service"], match["method"]
        if "." not in service and service not in methods:
            continue  # an HTTP path such as /v1/notes
        path = ("auth", "acl", resource)
        if service not in methods:
            problems.append(where.manifest_at(path, f"no service {service} in the compiled protos", key=True))
        elif method not in methods[service]:
            near = difflib.get_close_matches(method, methods[service], n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            problems.append(
                where.manifest_at(path, f"service {service} has no method {method}{hint}", key=True)
            )
    return rules, problems


def _events(manifest: Manifest, where: _Locator) -> tuple[list[model.Event], list[Diagnostic]]:
    events: list[model.Event] = []
    problems: list[Diagnostic] = []
    for event_name, fields in manifest.events.items():
        if (
            not _python_name(event_name)
            or event_name in _RESERVED_EVENT_NAMES
            or hasattr(builtins, event_name)
        ):
            problems.append(
                where.manifest_at(
                    ("events", event_name), f"'{event_name}' cannot name an event class", key=True
                )
            )
            continue
        event_fields = []
        for field_name, type_text in fields.items():
            if (
                not _python_name(field_name)
                or field_name.startswith("_")
                or field_name in _RESERVED_EVENT_FIELDS
                or field_name in _FIELD_TYPE_NAMES
            ):
                problems.append(
                    where.manifest_at(
                        ("events", event_name, field_name), f"'{field_name}' cannot name a field", key=True
                    )
                )
                continue
            annotation = " ".join(type_text.split())
            event_fields.append(model.EventField(field_name, annotation, annotation.endswith("| None")))
        uses_datetime = any("datetime" in f.annotation for f in event_fields)
        events.append(model.Event(event_name, tuple(event_fields), uses_datetime))
    return events, problems


def build_project(manifest: Manifest, compiled: Compiled, header: str) -> model.Project:
    """The model to render; raises CodegenError listing every located problem."""
    where = _Locator(manifest, compiled)
    problems = _check_modules(compiled, where)
    services, service_problems = _services(manifest, compiled, where)
    acl, acl_problems = _acl(manifest, compiled, where)
    events, event_problems = _events(manifest, where)
    problems += service_problems + acl_problems + event_problems
    if problems:
        raise CodegenError(problems)
    packages = sorted({p.rsplit("/", 1)[0] for p in compiled.files if "/" in p})
    all_packages: set[str] = set()
    for package in packages:
        parts = package.split("/")
        all_packages.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return model.Project(
        manifest.name,
        header,
        tuple(services),
        tuple(events),
        tuple(acl),
        tuple(sorted(all_packages)),
    )
