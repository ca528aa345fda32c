"""The layout as a specification: who may write what, which way imports go, where the backend
is asked. Each rule is checked by reading the source, and each check is shown to catch a
breach, so none of them can pass by finding nothing.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from partner_api.config import ROOT

PRODUCT = [ROOT / "partner_api", ROOT / "dispatcher"]
LIFECYCLE = ROOT / "partner_api" / "delivery" / "lifecycle.py"
DB = ROOT / "partner_api" / "db.py"
LONG_FUNCTION = 50  # lines; a longer one says why in a `# Long: …` comment above its def

# Writes to the delivery tables (and the due-work rows the claim reads), or to a subscription's
# row, through peewee or in raw SQL.
WRITE_PATTERNS = [
    re.compile(
        r"\b(Delivery|DeliveryFailure|DeliveryHistory|DueWork)\.(update|insert|insert_many|delete|create|replace)\b"
    ),
    re.compile(r"\bSubscription\.(update|delete|insert|insert_many|replace)\b"),
    re.compile(
        r"\b(UPDATE|DELETE\s+FROM|INSERT\s+INTO)\s+(deliveries|delivery_\w+|due_work)\b", re.I
    ),
    re.compile(r"\b(UPDATE|DELETE\s+FROM)\s+webhook_subscriptions\b", re.I),
    re.compile(r"\b(delivery|subscription|failure)\w*\.save\(", re.I),
]
BACKEND_QUESTION = re.compile(
    r"\b(is_postgres|is_sqlite)\(|isinstance\([^)]*\b(Postgresql|Sqlite)Database\b"
)
SQL_USE = re.compile(r"\b(execute_sql|execute_repeatable|atomic|write_transaction)\(|\.execute\(\)")


def python_files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def writes_in(text: str) -> list[str]:
    return [m.group(0) for pattern in WRITE_PATTERNS for m in pattern.finditer(text)]


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_only_the_lifecycle_writes_deliveries_and_subscription_state():
    breaches = {
        relative(path): found
        for path in python_files(*PRODUCT)
        if path != LIFECYCLE and (found := writes_in(path.read_text()))
    }
    assert breaches == {}
    # The check sees writes where they are: the lifecycle makes every kind of them.
    seen = writes_in(LIFECYCLE.read_text())
    assert any("Delivery.update" in w for w in seen)
    assert any("DeliveryFailure.create" in w for w in seen)
    assert any("Subscription.update" in w for w in seen)
    assert any(w.upper().startswith("UPDATE DELIVERIES") for w in seen)
    assert any("Delivery.delete" in w for w in seen)
    assert any(w.upper().startswith("INSERT INTO DUE_WORK") for w in seen)


def test_a_write_outside_the_lifecycle_would_be_caught():
    for sneaky in (
        'Delivery.update(status="held").execute()',
        'database.execute_sql("update deliveries set status = 1")',
        'database.execute_sql("DELETE FROM delivery_failures")',
        'database.execute_sql("UPDATE due_work SET due_at = 0")',
        "DueWork.delete().execute()",
        "Subscription.update(status='disabled')",
        "subscription.save()",
        "delivery.save(only=[Delivery.status])",
    ):
        assert writes_in(sneaky), sneaky


def test_the_lifecycle_lists_every_transition():
    text = LIFECYCLE.read_text()
    names = {
        node.name
        for node in ast.parse(text).body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
    }
    transitions = {
        "create_deliveries",
        "lease",
        "lease_oldest_due",
        "record_outcomes",
        "release",
        "hold",
        "hold_due",
        "release_held",
        "cancel_open",
        "disable",
        "enable",
        "delete",
        "change_subscription",
        "replay",
        "prune_finished",
    }
    assert transitions <= names
    for word in ("pending", "held", "delivered", "dead_lettered", "cancelled", "prune"):
        assert word in ast.get_docstring(ast.parse(text))


def test_configuration_is_a_leaf():
    ours = {
        m for m in imported_modules(ROOT / "partner_api" / "config.py") if m.startswith("partner")
    }
    assert ours == set()


def test_only_the_database_module_asks_which_backend_is_in_use():
    breaches = {
        relative(path): BACKEND_QUESTION.findall(path.read_text())
        for path in python_files(*PRODUCT)
        if path != DB and BACKEND_QUESTION.search(path.read_text())
    }
    assert breaches == {}
    assert BACKEND_QUESTION.search(DB.read_text())


def test_the_dispatcher_writes_no_sql_of_its_own():
    breaches = {
        relative(path): SQL_USE.findall(path.read_text())
        for path in python_files(ROOT / "dispatcher")
        if SQL_USE.search(path.read_text())
    }
    assert breaches == {}
    assert SQL_USE.search(LIFECYCLE.read_text())


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("partner_api/delivery", ("partner_api.web", "flask", "flask_smorest", "dispatcher")),
        ("dispatcher", ("partner_api.web", "flask", "flask_smorest")),
    ],
)
def test_imports_never_go_up_to_the_web_layer(package, forbidden):
    breaches = {
        relative(path): sorted(
            m
            for m in imported_modules(path)
            if m.split(".")[0] in forbidden
            or m in forbidden
            or any(m.startswith(f + ".") for f in forbidden)
        )
        for path in python_files(ROOT / package)
    }
    assert {k: v for k, v in breaches.items() if v} == {}


def test_the_dispatcher_process_never_loads_the_web_layer():
    """Why `partner_api.create_app` imports the factory lazily."""
    probe = "import sys, dispatcher.__main__; print('\\n'.join(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "partner_api.delivery.lifecycle" in loaded
    assert [m for m in loaded if m.startswith(("partner_api.web", "flask_smorest"))] == []


def test_every_module_says_what_it_owns():
    missing = [
        relative(path)
        for path in python_files(*PRODUCT, ROOT / "harness", ROOT / "bench")
        if path.stat().st_size and not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert missing == []


def unreasoned_long_functions(path: Path) -> list[str]:
    """Functions of `path` longer than LONG_FUNCTION lines with no `# Long: …` line above."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if node.end_lineno - node.lineno + 1 <= LONG_FUNCTION:
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        if first < 2 or not lines[first - 2].strip().startswith("# Long:"):
            found.append(f"{node.name} (line {node.lineno})")
    return found


def test_no_function_is_long_without_a_reason():
    roots = [*PRODUCT, ROOT / "harness", ROOT / "bench", ROOT / "tests", ROOT / "examples"]
    found = {
        relative(path): long
        for path in python_files(*roots)
        if (long := unreasoned_long_functions(path))
    }
    assert found == {}


def test_a_long_function_without_a_reason_would_be_caught(tmp_path):
    body = "\n".join(f"    x = {n}" for n in range(LONG_FUNCTION))
    bare = tmp_path / "bare.py"
    bare.write_text(f"def f():\n{body}\n")
    reasoned = tmp_path / "reasoned.py"
    reasoned.write_text(f"# Long: one step per line, read top to bottom\ndef f():\n{body}\n")
    assert unreasoned_long_functions(bare) == ["f (line 1)"]
    assert unreasoned_long_functions(reasoned) == []
