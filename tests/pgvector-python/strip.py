"""Removes the sparsevec parts of pgvector-python's published tests, and nothing else, so that
they run against ruvector (which has no sparsevec type); points their pg8000 connections at
the test server's port (libpq and asyncpg read PGHOST / PGPORT / PGUSER).

    strip.py SRC_TESTS_DIR OUT_DIR PORT

- test_sparse_vector.py is left out whole;
- a test function (test_*) that mentions sparsevec is left out;
- elsewhere (fixtures, model classes, setup code), the elements that mention them are left
  out: table columns, keyword arguments naming a field of those types, list and dict items,
  imported names, column definitions inside SQL strings, and statements that still mention
  them after that.
Prints what it left out, one line per item, so the run shows it.
"""

import ast
import pathlib
import re
import sys

TOKENS = re.compile(r"(?i)sparsevec|sparse_?vector|sparse_embedding")
SQL_COLUMN = re.compile(r"(?i),\s*sparse_embeddings?(\s+sparsevec(\(\d+\))?(\[\])?)?")
LEFT_OUT_FILES = {"test_sparse_vector.py"}


def is_column(node):
    return isinstance(node, ast.Call) and ast.unparse(node.func) == "Column"


def mentions(node):
    return bool(TOKENS.search(ast.unparse(node)))


class Strip(ast.NodeTransformer):
    def __init__(self, name, port):
        self.name = name
        self.port = port
        self.removed = []

    def note(self, what, node):
        self.removed.append(f"{self.name}:{getattr(node, 'lineno', '?')}: {what}")

    # Expressions: drop the parts that mention the two types.
    # Expressions, from the inside out: the smallest part that names the two types goes, and
    # then every list item that still mentions them (a tuple goes whole with its item).
    def visit_Call(self, node):
        self.generic_visit(node)
        # Columns of a table definition (SQLAlchemy's Table(name, metadata, *columns)).
        keep = [a for a in node.args if not (is_column(a) and mentions(a))]
        if len(keep) != len(node.args):
            self.note("table columns", node)
            node.args = keep
        # Fields of a model given by name (Item(sparse_embedding=...)).
        kw = [k for k in node.keywords if not TOKENS.search(k.arg or "")]
        if len(kw) != len(node.keywords):
            self.note("keyword arguments", node)
            node.keywords = kw
        # pg8000's own connection: the test server's port (a connection setting).
        if ast.unparse(node.func) == "Connection":
            node.keywords.append(ast.keyword(arg="port", value=ast.Constant(self.port)))
        return node

    def visit_List(self, node):
        self.generic_visit(node)
        keep = [e for e in node.elts if not mentions(e)]
        if len(keep) != len(node.elts):
            self.note("list items", node)
            node.elts = keep
        return node

    def visit_Tuple(self, node):
        return node

    def visit_Dict(self, node):
        self.generic_visit(node)
        pairs = [(k, v) for k, v in zip(node.keys, node.values)
                 if not ((k is not None and mentions(k)) or mentions(v))]
        if len(pairs) != len(node.keys):
            self.note("dict items", node)
            node.keys = [k for k, _ in pairs]
            node.values = [v for _, v in pairs]
        return node

    def visit_Constant(self, node):
        if isinstance(node.value, str):
            value = SQL_COLUMN.sub("", node.value)
            if value != node.value:
                self.note("SQL columns", node)
            # pg8000 through SQLAlchemy ('postgresql+pg8000://{USER}@localhost/...', the only
            # URLs with a user): the test server's port, which pg8000 does not take from
            # PGPORT (a connection setting).
            value = value.replace("@localhost/", f"@localhost:{self.port}/")
            node.value = value
        return node

    def visit_ImportFrom(self, node):
        keep = [a for a in node.names if not TOKENS.search(a.name)]
        if len(keep) != len(node.names):
            self.note("imported names", node)
        if not keep:
            return None
        node.names = keep
        return node

    # Statements: a test that uses the types goes; elsewhere, statements that still mention
    # them after the edits above go.
    def body(self, stmts):
        out = []
        for s in stmts:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name.startswith("test") and mentions(s):
                self.note(f"test {s.name}", s)
                continue
            s = self.visit(s)
            if s is None:
                continue
            if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and mentions(s):
                self.note("statement: " + ast.unparse(s).splitlines()[0][:100], s)
                continue
            out.append(s)
        return out or [ast.Pass()]

    def visit_Module(self, node):
        node.body = self.body(node.body)
        return node

    def visit_ClassDef(self, node):
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.body = self.body(node.body)
        return node

    def visit_FunctionDef(self, node):
        node.body = self.body(node.body)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_With(self, node):
        node.items = [self.visit(i) for i in node.items]
        node.body = self.body(node.body)
        return node

    visit_AsyncWith = visit_With

    def visit_If(self, node):
        node.test = self.visit(node.test)
        node.body = self.body(node.body)
        node.orelse = self.body(node.orelse) if node.orelse else []
        return node

    def visit_For(self, node):
        node.iter = self.visit(node.iter)
        node.body = self.body(node.body)
        return node

    visit_AsyncFor = visit_For


def main():
    src, out, port = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.py")):
        if path.name in LEFT_OUT_FILES:
            print(f"{path.name}: left out (sparsevec only)")
            continue
        strip = Strip(path.name, port)
        tree = ast.fix_missing_locations(strip.visit(ast.parse(path.read_text())))
        (out / path.name).write_text(ast.unparse(tree) + "\n")
        for line in strip.removed:
            print(line)


if __name__ == "__main__":
    main()
