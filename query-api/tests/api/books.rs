//! A view that is not the reference domain's: a `books` projection with its
//! own DDL, and query routes declared on the public API, queried over real
//! HTTP on SQLite and PostgreSQL: before the view exists (`503`), items
//! (`ETag`, `404` with the position), pages across filters and keys (text,
//! integer, of two columns), bad parameters (`400`) and read-your-writes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use event_store::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use projector::{ApplyError, Projection, Projector, Schema, ViewTx};
use query_api::{
    Filter, FromViewRow, ItemRoute, Key, ListRoute, QueryConfig, QueryRoutes, QueryState, View,
    ViewRow,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::common::{TestDb, http_client, open_store, projector_options};

const SQLITE: &str = "
    CREATE TABLE books (
        id      TEXT    NOT NULL PRIMARY KEY,
        title   TEXT    NOT NULL,
        author  TEXT    NOT NULL,
        pages   INTEGER NOT NULL,
        version INTEGER NOT NULL
    ) WITHOUT ROWID;
    -- Lists by author, by title prefix and by length are index ranges.
    CREATE INDEX books_by_author ON books (author, id);
    CREATE INDEX books_by_title ON books (title, id);
    CREATE INDEX books_by_pages ON books (pages, id);";

const POSTGRES: &str = "
    CREATE TABLE books (
        id      TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
        title   TEXT COLLATE \"C\" NOT NULL,
        author  TEXT COLLATE \"C\" NOT NULL,
        pages   BIGINT NOT NULL,
        version BIGINT NOT NULL
    );
    CREATE INDEX books_by_author ON books (author, id);
    CREATE INDEX books_by_title ON books (title, id);
    CREATE INDEX books_by_pages ON books (pages, id);";

#[derive(Debug, Serialize, Deserialize)]
struct BookAdded {
    id: String,
    title: String,
    author: String,
    pages: i64,
}

/// Folds `BookAdded` into `books`.
#[derive(Debug)]
struct Books;

#[async_trait]
impl Projection for Books {
    fn name(&self) -> &'static str {
        "books"
    }
    fn version(&self) -> u32 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["books"]
    }
    fn schema(&self) -> Schema {
        Schema::new(SQLITE, POSTGRES)
    }
    fn event_types(&self) -> &'static [&'static str] {
        &["BookAdded"]
    }
    async fn apply(&self, tx: &mut ViewTx<'_>, events: &[RecordedEvent]) -> Result<(), ApplyError> {
        let table = tx.table("books")?;
        for event in events {
            let book: BookAdded = event
                .data_as()
                .map_err(|e| ApplyError::event(event, e.to_string()))?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (id, title, author, pages, version) VALUES ($1, $2, $3, $4, $5)"
            )))
            .bind(book.id)
            .bind(book.title)
            .bind(book.author)
            .bind(book.pages)
            .bind(event.version as i64)
            .execute(tx.conn())
            .await?;
        }
        Ok(())
    }
}

/// A book as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Book {
    id: String,
    title: String,
    author: String,
    pages: i64,
    #[serde(skip)]
    version: i64,
}

impl FromViewRow for Book {
    fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> {
        Ok(Book {
            id: row.get("id")?,
            title: row.get("title")?,
            author: row.get("author")?,
            pages: row.get("pages")?,
            version: row.get("version")?,
        })
    }
    fn version(&self) -> Option<i64> {
        Some(self.version)
    }
}

fn routes() -> QueryRoutes {
    let view = View::new("books");
    let select = "SELECT id, title, author, pages, version FROM books";
    QueryRoutes::new()
        .item(
            ItemRoute::<Book>::new("/books/{id}", view, &format!("{select} WHERE id = $1"))
                .summary("One book"),
        )
        .list(
            ListRoute::<Book>::new("/books", view, select)
                .key(Key::text("id"))
                .filter(Filter::text("author", 100).eq("author"))
                .filter(Filter::integer("pages_min", 0, 100_000).at_least("pages"))
                .filter(
                    Filter::text("title_prefix", 100)
                        .starts_with("title")
                        .ordered_by(Key::text("title").then_text("id")),
                )
                .summary("A page of books"),
        )
        .list(
            ListRoute::<Book>::new("/books-by-length", view, select)
                .key(Key::integer("pages").then_text("id"))
                .filter(Filter::integer("pages_max", 0, 100_000).at_most("pages")),
        )
}

const AUTHORS: [&str; 3] = ["austen", "borges", "calvino"];

/// The books the test adds: ids in a known order, titles that share
/// prefixes, lengths that repeat.
fn book(i: usize) -> BookAdded {
    BookAdded {
        id: format!("0190a1b2-0000-7000-8000-{:012}", i + 1),
        title: format!("{} volume {}", ["Ficciones", "Emma", "Fables"][i % 3], i),
        author: AUTHORS[i % 3].to_owned(),
        pages: 100 + (i as i64 % 4) * 50,
    }
}

async fn add(store: &dyn EventStore, book: &BookAdded) -> u64 {
    let stream = StreamId::new(format!("book-{}", book.id)).unwrap();
    let event = NewEvent::json("BookAdded", book).unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap()
        .last_position
        .0
}

struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    async fn get(&self, uri: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self
            .client
            .get(format!("{}{uri}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    /// Every item of a list, page after page.
    async fn all(&self, uri: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        let sep = if uri.contains('?') { '&' } else { '?' };
        for _ in 0..100 {
            let page = match &next {
                Some(cursor) => format!("{uri}{sep}cursor={cursor}"),
                None => uri.to_owned(),
            };
            let (status, headers, body) = self.get(&page).await;
            assert_eq!(status, 200, "{page}: {body}");
            assert!(headers.contains_key("annals-position"));
            items.extend(body["items"].as_array().unwrap().iter().cloned());
            match body["next_cursor"].as_str() {
                Some(cursor) => next = Some(cursor.to_owned()),
                None => return items,
            }
        }
        panic!("{uri}: more than 100 pages");
    }
}

fn field<'a>(items: &'a [Value], name: &str) -> Vec<&'a Value> {
    items.iter().map(|i| &i[name]).collect()
}

#[tokio::test]
async fn a_view_of_its_own_is_served_by_declared_routes() {
    for test_db in TestDb::all().await {
        let backend = test_db.name;
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let db = test_db.open().await;
        let config = QueryConfig {
            min_position_wait_max: Duration::from_secs(3),
            ..QueryConfig::default()
        };
        let app = query_api::router(QueryState::new(db.clone(), config), &routes());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let http = Http {
            base,
            client: http_client(),
        };

        // Before the projector created the view.
        let (status, headers, body) = http.get("/books").await;
        assert_eq!(status, 503, "{backend}: {body}");
        assert_eq!(body["type"], "urn:annals:problem:view-not-ready");
        assert!(headers.contains_key("retry-after"));

        let books: Vec<BookAdded> = (0..25).map(book).collect();
        let mut head = 0;
        for b in &books {
            head = add(&store, b).await;
        }
        let projector = Projector::builder(Arc::new(store.clone()), db.clone())
            .options(projector_options())
            .projection(Books)
            .build()
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(projector.run(async move {
            let _ = stopped.await;
        }));

        // Read your writes: the first answer waits for the projector.
        let (status, headers, body) = http
            .get(&format!("/books/{}?min_position={head}", books[3].id))
            .await;
        assert_eq!(status, 200, "{backend}: {body}");
        assert_eq!(body["title"], books[3].title);
        assert_eq!(headers["etag"], "\"1\"");
        assert!(
            headers["annals-position"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= head
        );
        assert!(
            body.get("version").is_none(),
            "the row type decides the body"
        );

        // Pages by id, across pages, with every book once.
        let all = http.all("/books?limit=7").await;
        let ids: Vec<&str> = all.iter().map(|b| b["id"].as_str().unwrap()).collect();
        let mut expected: Vec<&str> = books.iter().map(|b| b.id.as_str()).collect();
        expected.sort_unstable();
        assert_eq!(ids, expected, "{backend}");

        // Filters combine.
        let borges = http.all("/books?author=borges&pages_min=150&limit=2").await;
        let want: Vec<&BookAdded> = books
            .iter()
            .filter(|b| b.author == "borges" && b.pages >= 150)
            .collect();
        assert_eq!(borges.len(), want.len(), "{backend}");
        assert!(
            borges
                .iter()
                .all(|b| b["author"] == "borges" && b["pages"].as_i64().unwrap() >= 150)
        );

        // A prefix filter orders by title (a key of two columns).
        let fables = http
            .all("/books?title_prefix=Fables%20volume%201&limit=2")
            .await;
        let mut titles: Vec<&str> = books
            .iter()
            .map(|b| b.title.as_str())
            .filter(|t| t.starts_with("Fables volume 1"))
            .collect();
        titles.sort_unstable();
        assert_eq!(field(&fables, "title"), titles, "{backend}");
        assert!(!titles.is_empty());

        // An integer key: by length, then id.
        let by_length = http.all("/books-by-length?pages_max=200&limit=4").await;
        let mut lengths: Vec<(i64, &str)> = books
            .iter()
            .filter(|b| b.pages <= 200)
            .map(|b| (b.pages, b.id.as_str()))
            .collect();
        lengths.sort_unstable();
        let got: Vec<(i64, &str)> = by_length
            .iter()
            .map(|b| (b["pages"].as_i64().unwrap(), b["id"].as_str().unwrap()))
            .collect();
        assert_eq!(got, lengths, "{backend}");

        // 404 with the position; 400 for what can never be answered.
        let missing = "0190a1b2-0000-7000-8000-999999999999";
        let (status, headers, body) = http.get(&format!("/books/{missing}")).await;
        assert_eq!(status, 404, "{backend}: {body}");
        assert_eq!(body["type"], "urn:annals:problem:not-found");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .starts_with("no book with id")
        );
        assert_eq!(
            headers["annals-position"].to_str().unwrap(),
            body["position"].to_string()
        );
        for (bad, slug) in [
            ("/books?pages_min=many", "invalid-request"),
            ("/books?pages_min=-1", "invalid-request"),
            ("/books?colour=red", "invalid-request"),
            ("/books?limit=0", "invalid-request"),
            ("/books?author=", "invalid-request"),
            ("/books/NOT-AN-ID", "invalid-id"),
            ("/books-by-length?cursor=e30", "invalid-request"),
        ] {
            let (status, _, body) = http.get(bad).await;
            assert_eq!(status, 400, "{backend} {bad}: {body}");
            assert_eq!(body["type"], format!("urn:annals:problem:{slug}"), "{bad}");
        }
        let (_, _, first) = http.get("/books?author=austen&limit=1").await;
        let cursor = first["next_cursor"].as_str().unwrap();
        let (status, _, body) = http
            .get(&format!("/books?author=calvino&cursor={cursor}"))
            .await;
        assert_eq!(status, 400, "{body}");
        let (status, _, body) = http.get(&format!("/books-by-length?cursor={cursor}")).await;
        assert_eq!(status, 400, "a cursor of another route: {body}");

        // A write read back at once with its position.
        let late = BookAdded {
            id: "0190a1b2-0000-7000-8000-000000000999".into(),
            title: "Late".into(),
            author: "austen".into(),
            pages: 10,
        };
        let position = add(&store, &late).await;
        let (status, _, body) = http
            .get(&format!("/books/{}?min_position={position}", late.id))
            .await;
        assert_eq!(status, 200, "{backend}: {body}");

        // With the projector stopped, a later position is not reached.
        let _ = stop.send(());
        running.await.unwrap().unwrap();
        let (status, headers, body) = http
            .get(&format!("/books?min_position={}", position + 1))
            .await;
        assert_eq!(status, 503, "{backend}: {body}");
        assert_eq!(body["type"], "urn:annals:problem:position-not-yet-visible");
        assert_eq!(
            headers["annals-position"].to_str().unwrap(),
            position.to_string()
        );

        // The document describes the routes from their declarations.
        let doc = serde_json::to_value(query_api::openapi(&routes())).unwrap();
        let list = &doc["paths"]["/books"]["get"];
        let names: Vec<&str> = list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "author",
                "pages_min",
                "title_prefix",
                "limit",
                "cursor",
                "min_position",
                "Annals-Min-Position"
            ]
        );
        assert_eq!(
            doc["components"]["schemas"]["BookPage"]["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/Book"
        );
        assert!(doc["components"]["schemas"]["Book"]["properties"]["title"].is_object());
        assert!(doc["paths"]["/books/{id}"]["get"]["responses"]["404"].is_object());

        server.abort();
        db.close().await;
    }
}
