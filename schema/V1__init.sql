-- The reference store schema: customers, widgets and orders.
-- Money is kept in cents (integers), never in floating point.
-- Runs as the tenant's <db>_owner role, so every object below is owned by it and
-- picks up the tenant's default privileges (admin / developer / customer tiers).

CREATE FUNCTION set_updated_at() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE customers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    first_name  text        NOT NULL CHECK (length(first_name) BETWEEN 1 AND 255),
    last_name   text        NOT NULL CHECK (length(last_name) BETWEEN 1 AND 255),
    email       text        NOT NULL UNIQUE CHECK (position('@' IN email) > 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_created_at_idx ON customers (created_at);

CREATE TABLE widgets (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text        NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    description      text        NOT NULL DEFAULT '',
    inventory_level  integer     NOT NULL DEFAULT 0 CHECK (inventory_level >= 0),
    price            bigint      NOT NULL CHECK (price >= 0),   -- cents
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX widgets_created_at_idx ON widgets (created_at);

CREATE TABLE orders (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  bigint      NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
    widget_id    bigint      NOT NULL REFERENCES widgets (id) ON DELETE RESTRICT,
    quantity     integer     NOT NULL CHECK (quantity > 0),
    amount       bigint      NOT NULL CHECK (amount >= 0),        -- cents
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'paid', 'shipped', 'cancelled')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_id_idx ON orders (customer_id);
CREATE INDEX orders_widget_id_idx ON orders (widget_id);
CREATE INDEX orders_created_at_idx ON orders (created_at);

CREATE TRIGGER customers_set_updated_at BEFORE UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER widgets_set_updated_at BEFORE UPDATE ON widgets
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER orders_set_updated_at BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
