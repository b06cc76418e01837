-- The torture schema of issue 2: every type and edge value, awkward identifiers, every table shape.
--
-- Two sections, split on the marker lines by tests/test_torture_roundtrip.py:
--   "-- @@ schema": DDL only (applied alone to make a fresh database with the same schema, no rows);
--   "-- @@ data":   rows and sequence states.
-- Everything must run as the superuser (extensions) in an empty database.

-- @@ schema
CREATE EXTENSION hstore;
CREATE EXTENSION citext;

CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'it''s "odd", really');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);

CREATE SCHEMA "Other Schema";
CREATE SCHEMA a;
CREATE SCHEMA "we""ird.Schema";

-- One row per edge case; every column nullable so each row can exercise a few values.
CREATE TABLE all_types (
    id serial PRIMARY KEY,
    label text NOT NULL,
    num numeric,
    num_fixed numeric(60, 10),
    f4 real,
    f8 double precision,
    i2 smallint,
    i4 integer,
    i8 bigint,
    b boolean,
    ts timestamp,
    ts3 timestamp(3),
    tstz timestamptz,
    d date,
    t time,
    ttz timetz,
    iv interval,
    ba bytea,
    j json,
    jb jsonb,
    arr_i int[],
    arr_t text[],
    arr_2d int[][],
    arr_f float8[],
    arr_mood mood[],
    arr_pair pair[],
    r4 int4range,
    rtstz tstzrange,
    mr int4multirange,
    m_enum mood,
    comp pair,
    dom posint,
    u uuid,
    ip inet,
    net cidr,
    mac macaddr,
    mac8 macaddr8,
    bits bit(8),
    vbits varbit,
    money_col money,
    x xml,
    tsv tsvector,
    tsq tsquery,
    pt point,
    ln line,
    ls lseg,
    bx box,
    pth path,
    pg polygon,
    ci circle,
    hs hstore,
    ct citext,
    ch char(10),
    vc varchar(20),
    tx text,
    o oid,
    lsn pg_lsn,
    "char_col" "char",
    nm name,
    jp jsonpath
);

-- Awkward identifiers: spaces, quotes, dots, mixed case, in schemas, tables and columns.
CREATE TABLE "Other Schema"."Mixed Case ""Quoted"".Table" (
    "Id" int PRIMARY KEY,
    "col with space" text,
    "Col.Dot" int,
    "quote""d" text,
    "select" boolean
);
CREATE TABLE "we""ird.Schema"."tab.le" ("x.y" int, "Z" text);
CREATE TABLE "UserAccounts" ("ID" bigint PRIMARY KEY, "eMail" citext UNIQUE);
-- A public table whose name contains a dot, and schema a's table b: their keys must not collide.
CREATE TABLE "a.b" (v text);
CREATE TABLE a.b (v text, w int);

-- Shapes.
CREATE TABLE dupes (x int, y text);                      -- no primary key, duplicate rows
CREATE TABLE empty_one (id int PRIMARY KEY, v text);     -- no rows
CREATE TABLE zero ();                                    -- zero columns, rows
CREATE TABLE dropped_col (a int, gone text, c int);
ALTER TABLE dropped_col DROP COLUMN gone;

-- Foreign keys: child loaded before parent (alphabetical order), deferrable cycle, non-deferrable cycle,
-- self reference, across schemas.
CREATE TABLE zz_parent (id int PRIMARY KEY, name text);
CREATE TABLE aa_child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES zz_parent (id));
CREATE TABLE cyc_a (id int PRIMARY KEY, b_id int);
CREATE TABLE cyc_b (id int PRIMARY KEY, a_id int REFERENCES cyc_a (id) DEFERRABLE INITIALLY DEFERRED);
ALTER TABLE cyc_a ADD CONSTRAINT cyc_a_b FOREIGN KEY (b_id) REFERENCES cyc_b (id) DEFERRABLE INITIALLY DEFERRED;
CREATE TABLE nd_a (id int PRIMARY KEY, b_id int);
CREATE TABLE nd_b (id int PRIMARY KEY, a_id int NOT NULL REFERENCES nd_a (id));
ALTER TABLE nd_a ADD CONSTRAINT nd_a_b FOREIGN KEY (b_id) REFERENCES nd_b (id);
CREATE TABLE employees (id int PRIMARY KEY, manager_id int REFERENCES employees (id), name text);
CREATE TABLE "Other Schema".refs_public (id int PRIMARY KEY, user_id bigint REFERENCES "UserAccounts" ("ID"));
ALTER TABLE "Other Schema"."Mixed Case ""Quoted"".Table"
    ADD CONSTRAINT "fk to ""a.b"" w" FOREIGN KEY ("Col.Dot") REFERENCES employees (id) ON DELETE CASCADE;

-- Constraints added NOT VALID over rows that break them: the rows must come back, the constraints stay NOT VALID.
CREATE TABLE legacy_rows (id int PRIMARY KEY, zz_id int, qty int);
ALTER TABLE legacy_rows ADD CONSTRAINT legacy_zz FOREIGN KEY (zz_id) REFERENCES zz_parent (id) NOT VALID;
ALTER TABLE legacy_rows ADD CONSTRAINT legacy_qty CHECK (qty >= 0) NOT VALID;

-- Triggers: a BEFORE INSERT that rewrites rows and an AFTER INSERT that writes audit rows.
CREATE TABLE audit_log (id bigserial PRIMARY KEY, tbl text, row_id int, at_note text);
CREATE TABLE trig_target (id int PRIMARY KEY, v text, touched int NOT NULL DEFAULT 0);
CREATE FUNCTION trig_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.v := upper(NEW.v) || '!';
    NEW.touched := NEW.touched + 1;
    RETURN NEW;
END $$;
CREATE FUNCTION trig_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.audit_log (tbl, row_id, at_note) VALUES (TG_TABLE_NAME, NEW.id, 'inserted');
    RETURN NULL;
END $$;
CREATE TRIGGER a_rewrite BEFORE INSERT ON trig_target FOR EACH ROW EXECUTE FUNCTION trig_rewrite();
CREATE TRIGGER z_audit AFTER INSERT ON trig_target FOR EACH ROW EXECUTE FUNCTION trig_audit();
CREATE FUNCTION trig_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.audit_log (tbl, at_note) VALUES (TG_TABLE_NAME, 'truncated');
    RETURN NULL;
END $$;
CREATE TRIGGER on_truncate AFTER TRUNCATE ON trig_target FOR EACH STATEMENT EXECUTE FUNCTION trig_truncated();
-- A disabled trigger must stay disabled; an ALWAYS trigger must be back in ALWAYS mode.
CREATE TRIGGER off_audit AFTER INSERT ON trig_target FOR EACH ROW EXECUTE FUNCTION trig_audit();
ALTER TABLE trig_target DISABLE TRIGGER off_audit;
CREATE FUNCTION trig_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.name := NEW.name || ' (via trigger)';
    RETURN NEW;
END $$;
CREATE TRIGGER always_rename BEFORE INSERT ON employees FOR EACH ROW EXECUTE FUNCTION trig_name();
ALTER TABLE employees ENABLE ALWAYS TRIGGER always_rename;

-- Partitioned (range, two leaves, a sub-partitioned leaf, a default partition), with an FK from the
-- partitioned parent, an FK referencing it, and a BEFORE INSERT trigger cloned onto every leaf.
CREATE TABLE sensors (id int PRIMARY KEY, name text);
CREATE TABLE measurements (
    id int NOT NULL,
    day date NOT NULL,
    sensor_id int REFERENCES sensors (id),
    val numeric,
    PRIMARY KEY (id, day)
) PARTITION BY RANGE (day);
CREATE TABLE measurements_2023 PARTITION OF measurements FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')
    PARTITION BY RANGE (id);
CREATE TABLE measurements_2024_low PARTITION OF measurements_2024 FOR VALUES FROM (MINVALUE) TO (150);
CREATE TABLE measurements_2024_rest PARTITION OF measurements_2024 DEFAULT;
CREATE TABLE measurements_default PARTITION OF measurements DEFAULT;
CREATE TABLE meas_notes (
    id int PRIMARY KEY,
    meas_id int,
    meas_day date,
    note text,
    FOREIGN KEY (meas_id, meas_day) REFERENCES measurements (id, day)
);
CREATE FUNCTION trig_double() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.val := NEW.val * 2;
    RETURN NEW;
END $$;
CREATE TRIGGER doubler BEFORE INSERT ON measurements FOR EACH ROW EXECUTE FUNCTION trig_double();

-- Inheritance: rows in the parent and in the child, each stored once.
CREATE TABLE animals (id int, name text);
CREATE TABLE dogs (breed text) INHERITS (animals);
-- NOT VALID checks inherited by partitions and by an inheritance child (the data section adds rows breaking them).
ALTER TABLE measurements ADD CONSTRAINT small_val CHECK (val < 500) NOT VALID;
ALTER TABLE animals ADD CONSTRAINT not_four CHECK (id <> 4) NOT VALID;

-- Identity and generated columns, serials, standalone sequences.
CREATE TABLE ident_always (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
CREATE TABLE ident_default (id bigint GENERATED BY DEFAULT AS IDENTITY (START 100 INCREMENT 5) PRIMARY KEY, v text);
CREATE TABLE gen_stored (id serial PRIMARY KEY, a int, b int, total int GENERATED ALWAYS AS (a * 10 + b) STORED);
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, big bigserial);
CREATE SEQUENCE seq_not_called;
CREATE SEQUENCE "Other Schema"."Seq Called";
CREATE SEQUENCE seq_desc INCREMENT -3 MINVALUE -1000 MAXVALUE -1 START -1;
CREATE SEQUENCE seq_unused START 77;

-- Unlogged table, a table under forced row-level security, views (not data), alembic_version.
CREATE UNLOGGED TABLE cache_entries (k text PRIMARY KEY, v jsonb);
CREATE TABLE secrets (id int PRIMARY KEY, s text);
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY nobody ON secrets USING (false);
CREATE VIEW user_names AS SELECT name FROM users;
CREATE MATERIALIZED VIEW user_count AS SELECT count(*) AS n FROM users;
CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);

-- @@ data
INSERT INTO all_types (label) VALUES ('all null');
INSERT INTO all_types (label, num, num_fixed, f4, f8, i2, i4, i8, b) VALUES
    ('numbers max', 12345678901234567890123456789012345678901234567890, 12345678901234567890123456789012345678901234567890.0123456789,
     3.4028235e38, 1.797e308, 32767, 2147483647, 9223372036854775807, true),
    ('numbers min', -0.00000000000000000000000000000000000000000000000001, -1e-10,
     -1.17549435e-38, 5e-324, -32768, -2147483648, -9223372036854775808, false),
    ('nan', 'NaN', 'NaN', 'NaN', 'NaN', 0, 0, 0, NULL),
    ('inf', 'Infinity', 99999999999999999999999999999999999999999999999999.9999999999, 'Infinity', 'Infinity', 1, 1, 1, true),
    ('-inf', '-Infinity', -99999999999999999999999999999999999999999999999999.9999999999, '-Infinity', '-Infinity', -1, -1, -1, false),
    ('-0', '-0', 0, '-0', '-0', 0, 0, 0, false),
    ('tenth', 0.1, 0.1, 0.1, 0.1, 0, 0, 0, false),
    ('long numeric', 3.141592653589793238462643383279502884197169399375105820974944592307816406286, 1.5, 1.0000001,
     0.30000000000000004, 0, 0, 0, true),
    ('numeric scale', 1.000000000000000000000000000000, 0.0000000000, 1.4e-45, 2.2250738585072014e-308, 0, 0, 0, true);
INSERT INTO all_types (label, ts, ts3, tstz, d, t, ttz, iv) VALUES
    ('time +inf', 'infinity', 'infinity', 'infinity', 'infinity', '24:00:00', '24:00:00-15:59', '178000000 years'),
    ('time -inf', '-infinity', '-infinity', '-infinity', '-infinity', '00:00:00', '00:00:00+15:59', '-178000000 years'),
    ('time BC', '4713-01-01 00:00:00 BC', '0044-03-15 12:00:00.123 BC', '4713-11-24 00:00:00+00 BC', '4713-01-01 BC',
     '23:59:59.999999', '12:34:56.789+05:30', '-1 years +2 mons -3 days +04:05:06.789'),
    ('time max', '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999', '294276-12-31 23:59:59.999999+00',
     '5874897-12-31', '13:37:00.000001', '13:37:00-03:17:42', '2147483647 days 2562047788:00:54.775807'),
    ('time odd', '2024-02-29 12:00:00.5', '1999-12-31 23:59:59.9995', '2000-01-01 00:00:00+14', '0001-01-01',
     '00:00:00.000001', '00:00:00.000001+00', '-2147483648 days -2562047788:00:54.775807'),
    ('interval mix', NULL, NULL, NULL, NULL, NULL, NULL, '1 mon -1 days'),
    ('interval months', NULL, NULL, NULL, NULL, NULL, NULL, '-2147483648 mons'),
    ('interval micro', NULL, NULL, NULL, NULL, NULL, NULL, '0.000001 secs');
INSERT INTO all_types (label, ba, j, jb) VALUES
    ('bytes', '\x005c0d0a00ff'::bytea, '{"a":1,  "a" : 2 ,"b":[1, 2]}', '{"a": 1, "b": [1, 2, {"c": null}], "d": "x\"y"}'),
    ('bytes empty', ''::bytea, '  [ 1 ,2,"\u00e9",  "\u0000" ] ', '[]'),
    ('json numbers', '\x5c4e'::bytea, '{"big": 123456789012345678901234567890, "f": 1.0e+400, "neg": -0}',
     '{"big": 123456789012345678901234567890, "f": 1.000, "s": "\\N"}'),
    ('json scalars', '\x0a0a'::bytea, '"just a string"', 'null'),
    ('json newline', '\x2c22'::bytea, E'{\n\t"k" :\r\n "v"\n}', '{"k": "tab\there"}');
INSERT INTO all_types (label, arr_i, arr_t, arr_2d, arr_f, arr_mood, arr_pair) VALUES
    ('arrays', '{1,NULL,3}', '{"a,b","c\"d","NULL",NULL,"","x\\y","{}"," sp "}', '{{1,2},{3,NULL}}',
     '{NaN,Infinity,-Infinity,-0,5e-324}', '{sad,"it''s \"odd\", really"}', '{"(1,x)","(,)",NULL,"(2,\"a,\"\"b\")"}'),
    ('array bounds', '[0:2]={1,2,3}', '[-5:-4]={x,y}', '[1:2][3:4]={{1,2},{3,4}}', '{}', '{}', '{}'),
    ('array 3d', '{}', '{}', '{{{1},{2}},{{3},{4}}}', NULL, NULL, NULL);
INSERT INTO all_types (label, r4, rtstz, mr, m_enum, comp, dom) VALUES
    ('ranges', '[1,5)', '[2020-01-01 00:00+00,infinity)', '{[1,3),[5,7)}', 'it''s "odd", really', '(1,"x,y")', 5),
    ('ranges empty', 'empty', 'empty', '{}', 'sad', '(,)', 2147483647),
    ('ranges open', '(,)', '(,)', '{(,)}', 'happy', '(,"")', 1),
    ('ranges bounds', '(,10]', '[-infinity,)', '{[-10,-5),[100,)}', 'ok', '(-1,"(nested)")', 1);
INSERT INTO all_types (label, u, ip, net, mac, mac8, bits, vbits, money_col) VALUES
    ('network', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.1.5/24', '10.0.0.0/8', '08:00:2b:01:02:03',
     '08:00:2b:01:02:03:04:05', B'10101010', B'1', '92233720368547758.07'),
    ('network v6', '00000000-0000-0000-0000-000000000000', '::ffff:1.2.3.4/128', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff',
     'ff:ff:ff:ff:ff:ff:ff:ff', B'00000000', B'', '-92233720368547758.08'),
    ('network odd', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '::', '0.0.0.0/0', '00:00:00:00:00:00',
     '00:00:00:00:00:00:00:00', B'11111111', B'0101010101010101010101010101010101010101010101010101010101010101010101', '0.01');
INSERT INTO all_types (label, x, tsv, tsq, pt, ln, ls, bx, pth, pg, ci) VALUES
    ('text search geo', '<a b="1">x &amp; y<![CDATA[<raw>]]></a>', 'a fat cat:1A sat:2B on a mat ''it''''s'' "q"',
     'fat & (rat | cat) & !dog & ''it''''s'':*', '(1.5,-2)', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)',
     '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(1,0))', '<(0,0),1.5>'),
    ('geo floats', '<?xml version="1.0"?><r>caf&#233;</r>', '', '''x''', '(0.1,1e-300)', '{0.3,NaN,1}',
     '[(1e308,-1e308),(0,-0)]', '(Infinity,0.1),(-0,-Infinity)', '((0.1,0.2),(0.3,0.4))', '((1,2))', '<(0.1,0.2),0>'),
    ('xml content', 'text <b>with</b> &lt; mixed', 'naïve:1,2,3 café', '!!a', '(NaN,NaN)', '{1,0,5}', '[(1,2),(1,2)]',
     '(0,0),(0,0)', '[(1,1)]', '((0,0))', '<(1,1),Infinity>');
INSERT INTO all_types (label, hs, ct, ch, vc, tx, o, lsn, "char_col", nm, jp) VALUES
    ('strings', '"a"=>"1", "b c"=>NULL, "q\"uote"=>"x=>y", ""=>""', 'MiXeD Case', 'ab   ', 'trailing   ',
     E'tab\there\nnewline\r\ncr \\backslash "double" ''single'' \\N end', 4294967295, 'FFFFFFFF/FFFFFFFF', 'x',
     'a name with spaces', '$.a[*] ? (@ > 1)'),
    ('strings 2', '', 'ß', '', '', E'\\N', 0, '0/0', ' ', '', '$'),
    ('strings 3', NULL, '', '          ', ' ', '', NULL, NULL, NULL, NULL, NULL),
    ('strings csv', '"\\"=>"\\\\"', 'a"b', 'x,y', E'\\.', E'\\.', 1, '16/B374D848', '"', 'Nm"Q', 'strict $.x.y'),
    ('strings eol', NULL, E'\r', E'\n', E'\r\n', E'\\.\n\\.\r\n\\.', NULL, NULL, E'\n', E'\t', NULL),
    ('strings unicode', '"日本"=>"語"', '😀', '日本語', 'Ünïcödé', E'日本語 😀 \u00a0nbsp \u2028ls \u0001ctl \u007f', 2, '1/1',
     'é', 'ünï', 'lax $."key with space"'),
    ('strings null word', '"NULL"=>"NULL"', 'NULL', 'NULL', 'NULL', 'NULL', NULL, NULL, NULL, 'NULL', '$.NULL');

INSERT INTO "Other Schema"."Mixed Case ""Quoted"".Table" VALUES
    (1, 'one', NULL, 'q"1', true), (2, '', NULL, NULL, false), (3, NULL, NULL, E'line\nbreak', NULL);
INSERT INTO "we""ird.Schema"."tab.le" VALUES (1, 'x'), (1, 'x'), (NULL, NULL);
INSERT INTO "UserAccounts" VALUES (1, 'Alice@Example.com'), (2, 'bob@example.com'), (-9223372036854775808, 'min@x');
INSERT INTO "a.b" VALUES ('public dotted'), ('second');
INSERT INTO a.b VALUES ('schema a table b', 1);

INSERT INTO dupes VALUES (1, 'a'), (1, 'a'), (1, 'a'), (NULL, NULL), (NULL, NULL), (2, ''), (2, NULL);
INSERT INTO zero DEFAULT VALUES;
INSERT INTO zero DEFAULT VALUES;
INSERT INTO zero DEFAULT VALUES;
INSERT INTO dropped_col VALUES (1, 2), (3, NULL);

INSERT INTO zz_parent SELECT i, 'p' || i FROM generate_series(1, 50) i;
INSERT INTO aa_child SELECT i, 1 + i % 50 FROM generate_series(1, 200) i;
BEGIN;
INSERT INTO cyc_a VALUES (1, 10), (2, 20), (3, NULL);
INSERT INTO cyc_b VALUES (10, 1), (20, 2), (30, 3);
COMMIT;
INSERT INTO nd_a VALUES (1, NULL), (2, NULL);
INSERT INTO nd_b VALUES (10, 1), (20, 2);
UPDATE nd_a SET b_id = id * 10;
-- Managers get higher ids than their reports, so loading in id order would break the self reference.
INSERT INTO employees (id, manager_id, name) VALUES (100, NULL, 'boss');
INSERT INTO employees (id, manager_id, name) SELECT i, 100, 'e' || i FROM generate_series(1, 30) i;
UPDATE employees SET manager_id = id + 1 WHERE id < 30;
INSERT INTO "Other Schema".refs_public VALUES (1, 1), (2, NULL), (3, -9223372036854775808);
UPDATE "Other Schema"."Mixed Case ""Quoted"".Table" SET "Col.Dot" = "Id" WHERE "Id" < 3;

ALTER TABLE legacy_rows DROP CONSTRAINT legacy_zz, DROP CONSTRAINT legacy_qty;
INSERT INTO legacy_rows VALUES (1, 1, 1), (2, 999, 5), (3, 2, -7), (4, NULL, NULL);
ALTER TABLE legacy_rows ADD CONSTRAINT legacy_zz FOREIGN KEY (zz_id) REFERENCES zz_parent (id) NOT VALID;
ALTER TABLE legacy_rows ADD CONSTRAINT legacy_qty CHECK (qty >= 0) NOT VALID;

INSERT INTO trig_target (id, v) SELECT i, 'row ' || i FROM generate_series(1, 20) i;
INSERT INTO trig_target (id, v) VALUES (21, NULL);

INSERT INTO sensors VALUES (1, 'one'), (2, 'two'), (3, 'three');
ALTER TABLE measurements DROP CONSTRAINT small_val;
INSERT INTO measurements
    SELECT i, DATE '2022-12-25' + i * 3, 1 + i % 3, i * 1.5 FROM generate_series(1, 300) i;
ALTER TABLE measurements ADD CONSTRAINT small_val CHECK (val < 500) NOT VALID;
INSERT INTO meas_notes VALUES (1, 10, DATE '2022-12-25' + 30, 'note'), (2, 200, DATE '2022-12-25' + 600, 'late'),
    (3, NULL, NULL, 'none');

ALTER TABLE animals DROP CONSTRAINT not_four;
INSERT INTO animals VALUES (1, 'generic'), (2, 'thing'), (2, 'thing');
INSERT INTO dogs VALUES (3, 'rex', 'lab'), (4, 'fido', NULL);
ALTER TABLE animals ADD CONSTRAINT not_four CHECK (id <> 4) NOT VALID;

INSERT INTO ident_always (v) SELECT 'v' || i FROM generate_series(1, 10) i;
DELETE FROM ident_always WHERE id IN (3, 10);
INSERT INTO ident_default (v) VALUES ('a'), ('b');
INSERT INTO ident_default (id, v) VALUES (7, 'explicit');
INSERT INTO gen_stored (a, b) SELECT i, i * 2 FROM generate_series(1, 10) i;
INSERT INTO users (name) SELECT 'user ' || i FROM generate_series(1, 100) i;
DELETE FROM users WHERE id > 90;
SELECT setval('seq_not_called', 42, false);
SELECT setval('"Other Schema"."Seq Called"', 1000, true);
SELECT nextval('seq_desc'), nextval('seq_desc');

INSERT INTO cache_entries VALUES ('k1', '{"x": 1}'), ('k2', NULL);
INSERT INTO secrets VALUES (1, 'hidden by RLS'), (2, 'also hidden');
REFRESH MATERIALIZED VIEW user_count;
INSERT INTO alembic_version VALUES ('abc123def456');
