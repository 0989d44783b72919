"""ALTER EXTENSION ruvector UPDATE from every released version.

A database created with an earlier release's SQL (kept under crates/ruvector/tests/upgrade,
installed next to the current scripts by scripts/test) runs on the current library, is filled
with tenants, a bound role, a collection, a tenant table with a tenant-keyed index and a
quota, then updated. Afterwards:
- its extension objects are exactly those of a fresh CREATE EXTENSION (every function,
  table, column, default, index, constraint, trigger, policy, view, type, operator, operator
  class, cast, comment and privilege): a change of the SQL surface without an update script
  fails here;
- the application gets the same answers as before, refusals and quotas hold, and the data
  written before the update is still confined to its tenant.
"""

import glob
import os
import re

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from tenancy_fixtures import admin_dsn, fresh_database

HERE = os.path.dirname(os.path.abspath(__file__))
KEPT = os.path.join(HERE, "..", "..", "crates", "ruvector", "tests", "upgrade")
SQL_DIR = os.path.join(HERE, "..", "..", "crates", "ruvector", "sql")
DIMS = 8

# One text line per object of the extension, with everything that defines it.
DESCRIBE = r"""
WITH m AS (
    SELECT d.classid, d.objid, d.objsubid FROM pg_depend d
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
      AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ruvector')
)
SELECT pg_describe_object(m.classid, m.objid, m.objsubid) || ' :: ' || coalesce(CASE m.classid
  WHEN 'pg_proc'::regclass THEN (SELECT concat_ws(' | ', p.prokind, p.prosrc, p.probin, p.provolatile,
        p.proisstrict, p.proparallel, p.prosecdef, p.proleakproof, p.procost, p.prorows,
        p.proconfig::text, pg_get_function_result(p.oid), pg_get_function_arguments(p.oid),
        p.proacl::text, obj_description(p.oid, 'pg_proc'),
        CASE WHEN p.prokind = 'a' THEN (SELECT concat_ws(' ', a.aggtransfn, a.aggfinalfn, a.aggcombinefn,
            a.aggtranstype::regtype, a.agginitval) FROM pg_aggregate a WHERE a.aggfnoid = p.oid) END)
        FROM pg_proc p WHERE p.oid = m.objid)
  WHEN 'pg_class'::regclass THEN (SELECT concat_ws(' | ', c.relkind, c.relacl::text, c.reloptions::text,
        c.relrowsecurity, c.relforcerowsecurity, obj_description(c.oid, 'pg_class'),
        CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) END,
        (SELECT string_agg(concat_ws(' ', a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
            pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, a.attacl::text,
            col_description(c.oid, a.attnum)), ', ' ORDER BY a.attnum)
            FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
        (SELECT string_agg(k.conname || ' ' || pg_get_constraintdef(k.oid), ', ' ORDER BY k.conname)
            FROM pg_constraint k WHERE k.conrelid = c.oid),
        (SELECT string_agg(pg_get_indexdef(i.indexrelid), ', ' ORDER BY pg_get_indexdef(i.indexrelid))
            FROM pg_index i WHERE i.indrelid = c.oid),
        (SELECT string_agg(pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text, ', ' ORDER BY t.tgname)
            FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal),
        (SELECT string_agg(concat_ws(' ', pol.polname, pol.polcmd, pol.polpermissive, pol.polroles::regrole[]::text,
            pg_get_expr(pol.polqual, pol.polrelid), pg_get_expr(pol.polwithcheck, pol.polrelid)), ', ' ORDER BY pol.polname)
            FROM pg_policy pol WHERE pol.polrelid = c.oid),
        (SELECT string_agg(concat_ws(' ', r.rulename, pg_get_ruledef(r.oid)), ', ' ORDER BY r.rulename)
            FROM pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN'))
        FROM pg_class c WHERE c.oid = m.objid)
  WHEN 'pg_type'::regclass THEN (SELECT concat_ws(' | ', t.typtype, t.typlen, t.typbyval, t.typalign, t.typstorage,
        t.typinput, t.typoutput, t.typreceive, t.typsend, t.typmodin, t.typmodout, t.typanalyze,
        t.typsubscript, t.typcategory, t.typispreferred, obj_description(t.oid, 'pg_type'))
        FROM pg_type t WHERE t.oid = m.objid)
  WHEN 'pg_operator'::regclass THEN (SELECT concat_ws(' | ', o.oprcode, o.oprcom::regoperator, o.oprnegate::regoperator,
        o.oprrest, o.oprjoin, o.oprcanhash, o.oprcanmerge, obj_description(o.oid, 'pg_operator'))
        FROM pg_operator o WHERE o.oid = m.objid)
  WHEN 'pg_opclass'::regclass THEN (SELECT concat_ws(' | ', oc.opcdefault, oc.opcintype::regtype, oc.opckeytype::regtype,
        (SELECT concat_ws(' ', f.opfname, am.amname) FROM pg_opfamily f JOIN pg_am am ON am.oid = f.opfmethod
            WHERE f.oid = oc.opcfamily))
        FROM pg_opclass oc WHERE oc.oid = m.objid)
  WHEN 'pg_opfamily'::regclass THEN (SELECT concat_ws(' | ',
        (SELECT string_agg(concat_ws(' ', ao.amopstrategy, ao.amopopr::regoperator, ao.amoppurpose,
            ao.amopsortfamily, ao.amoplefttype::regtype, ao.amoprighttype::regtype), ', ' ORDER BY 1)
            FROM pg_amop ao WHERE ao.amopfamily = m.objid),
        (SELECT string_agg(concat_ws(' ', ap.amprocnum, ap.amproc::regprocedure, ap.amproclefttype::regtype,
            ap.amprocrighttype::regtype), ', ' ORDER BY 1)
            FROM pg_amproc ap WHERE ap.amprocfamily = m.objid)))
  WHEN 'pg_cast'::regclass THEN (SELECT concat_ws(' | ', k.castfunc::regprocedure, k.castcontext, k.castmethod)
        FROM pg_cast k WHERE k.oid = m.objid)
  WHEN 'pg_am'::regclass THEN (SELECT concat_ws(' | ', a.amhandler, a.amtype) FROM pg_am a WHERE a.oid = m.objid)
  WHEN 'pg_namespace'::regclass THEN (SELECT concat_ws(' | ', n.nspacl::text, obj_description(n.oid, 'pg_namespace'))
        FROM pg_namespace n WHERE n.oid = m.objid)
  WHEN 'pg_event_trigger'::regclass THEN (SELECT concat_ws(' | ', e.evtevent, e.evtfoid::regproc, e.evtenabled, e.evttags::text)
        FROM pg_event_trigger e WHERE e.oid = m.objid)
  END, '?')
FROM m
UNION ALL
SELECT 'extension :: ' || concat_ws(' | ', e.extrelocatable, e.extnamespace::regnamespace,
       (SELECT array_agg(c::regclass::text ORDER BY c::regclass::text) FROM unnest(e.extconfig) c)::text,
       e.extcondition::text)
FROM pg_extension e WHERE e.extname = 'ruvector'
ORDER BY 1
"""


def current_version():
    with open(os.path.join(HERE, "..", "..", "Cargo.toml")) as f:
        return re.search(r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"', f.read(), re.M | re.S).group(1)


def released():
    """The earlier releases whose SQL is kept: their versions, oldest first."""
    found = [re.match(r"ruvector--(.+)\.sql$", os.path.basename(p)).group(1)
             for p in glob.glob(os.path.join(KEPT, "ruvector--*.sql"))]
    return sorted((v for v in found if "--" not in v), key=lambda v: [int(x) for x in v.split(".")])


def describe(conn):
    return [r[0] for r in conn.execute(DESCRIBE)]


def vectors(n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, DIMS)).astype(np.float32)


def test_every_release_has_an_update_path_to_this_version():
    """Each kept release can reach the current version through update scripts, and the kept
    SQL of a release is never the current version's (a release's SQL is frozen once out)."""
    now = current_version()
    versions = released()
    assert versions, "the SQL of at least one earlier release is kept"
    assert now not in versions
    scripts = {tuple(re.match(r"ruvector--(.+)--(.+)\.sql$", os.path.basename(p)).groups())
               for p in glob.glob(os.path.join(SQL_DIR, "ruvector--*--*.sql"))}
    for v in versions:
        seen, frontier = {v}, [v]
        while frontier:
            here = frontier.pop()
            for a, b in scripts:
                if a == here and b not in seen:
                    seen.add(b)
                    frontier.append(b)
        assert now in seen, f"no chain of update scripts leads from {v} to {now}"


@pytest.mark.parametrize("old", released())
def test_update_from_an_earlier_release_gives_the_fresh_schema_and_keeps_every_tenant(old):
    db_old, db_new = "ruvector_upgrade_old", "ruvector_upgrade_new"
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        for db in (db_old, db_new):
            c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            c.execute(f"CREATE DATABASE {db}")
    try:
        with psycopg.connect(admin_dsn(db_old), autocommit=True) as su:
            su.execute(f"CREATE EXTENSION ruvector VERSION '{old}'")
            assert su.execute("SELECT extversion FROM pg_extension WHERE extname = 'ruvector'").fetchone()[0] == old
            su.execute("""DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rv_app')
                         THEN CREATE ROLE rv_app LOGIN NOSUPERUSER NOBYPASSRLS; END IF;
                         IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rv_app_bound')
                         THEN CREATE ROLE rv_app_bound LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$""")
            su.execute("GRANT ruvector_user TO rv_app, rv_app_bound")
            su.execute(f"""CREATE TABLE docs (
                               id bigserial,
                               tenant_id text NOT NULL DEFAULT current_setting('ruvector.tenant_id'),
                               vec vector({DIMS}),
                               PRIMARY KEY (tenant_id, id))""")
            su.execute("GRANT SELECT, INSERT, DELETE ON docs TO rv_app, rv_app_bound")
            su.execute("GRANT USAGE ON SEQUENCE docs_id_seq TO rv_app, rv_app_bound")
            su.execute("SELECT ruvector_enable_tenant_rls('docs')")
            su.execute("CREATE INDEX docs_vec ON docs USING ruhnsw (vec vector_l2_ops)")
            for t, limit in (("up-a", 500), ("up-b", 302)):
                su.execute("SELECT ruvector_tenant_create(%s, %s)", (t, f'{{"max_vectors": {limit}, "max_qps": 0}}'))
            su.execute("SELECT ruvector_tenant_bind_role('rv_app_bound', 'up-b')")
            su.execute("SELECT ruvector_tenant_suspend('up-a')")
            su.execute("SELECT ruvector_tenant_resume('up-a')")

        app = psycopg.conninfo.make_conninfo(admin_dsn(db_old), user="rv_app")
        queries = vectors(10, seed=9)

        def answers(tenant):
            with psycopg.connect(app, autocommit=True) as a:
                register_vector(a)
                a.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
                return [[r[0] for r in a.execute("SELECT id FROM docs ORDER BY vec <-> %s LIMIT 5", (q,))]
                        for q in queries]

        with psycopg.connect(app, autocommit=True) as a:
            register_vector(a)
            for t, seed in (("up-a", 1), ("up-b", 2)):
                a.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (t,))
                a.cursor().executemany("INSERT INTO docs (vec) VALUES (%s)", [(v,) for v in vectors(300, seed)])
            a.execute("SELECT set_config('ruvector.tenant_id', 'up-b', false)")
            a.execute("SELECT ruvector_collection_create('notes', '{\"dimensions\": 8}')")
        before = {t: answers(t) for t in ("up-a", "up-b")}

        with psycopg.connect(admin_dsn(db_old), autocommit=True) as su:
            su.execute("ALTER EXTENSION ruvector UPDATE")
            assert su.execute("SELECT extversion FROM pg_extension WHERE extname = 'ruvector'").fetchone()[0] == current_version()
            updated = describe(su)
        with fresh_database(db_new) as fresh:
            created = describe(fresh)
        missing = sorted(set(created) - set(updated))
        extra = sorted(set(updated) - set(created))
        assert not missing and not extra, (
            f"after ALTER EXTENSION UPDATE from {old}, objects differ from a fresh install:\n"
            f"only in a fresh install: {missing[:5]}\nonly after the update: {extra[:5]}")

        # The application, after the update: the same answers, refusals and quotas hold.
        assert {t: answers(t) for t in ("up-a", "up-b")} == before
        with psycopg.connect(app, autocommit=True) as a:
            register_vector(a)
            with pytest.raises(psycopg.Error) as e:
                a.execute("SELECT count(*) FROM docs")
            assert e.value.sqlstate == "28000"
            a.execute("SET ruvector.tenant_id = 'up-b'")
            assert a.execute("SELECT count(*), count(DISTINCT tenant_id) FROM docs").fetchone() == (300, 1)
            assert a.execute("SELECT count(*) FROM ruvector.my_collections").fetchone()[0] == 1
            a.execute("INSERT INTO docs (vec) VALUES (%s), (%s)", tuple(vectors(2, seed=5)))
            with pytest.raises(psycopg.Error) as e:
                a.execute("INSERT INTO docs (vec) VALUES (%s)", (vectors(1, seed=6)[0],))
            assert e.value.sqlstate == "53400", "up-b's quota of 302 counts the rows written before the update"
        bound = psycopg.conninfo.make_conninfo(admin_dsn(db_old), user="rv_app_bound")
        with psycopg.connect(bound, autocommit=True) as b:
            with pytest.raises(psycopg.Error) as e:
                b.execute("SET ruvector.tenant_id = 'up-a'")
            assert e.value.sqlstate == "42501", "the role binding made before the update holds"
        with psycopg.connect(admin_dsn(db_old), autocommit=True) as su:
            su.execute("SET ruvector.tenant_id = '*'")
            failed = su.execute('SELECT "check", detail FROM ruvector_index_check(%s) WHERE NOT ok', ('docs_vec',)).fetchall()
            assert not failed, failed
    finally:
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            for db in (db_old, db_new):
                c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
