//! A to-do list on annals: one aggregate, one view, one query.

mod task;
mod view;

use annals::App;
use command_api::{CommandRoutes, NoFields, Route};
use query_api::{Filter, Key, ListRoute, QueryRoutes, View};
use serde::Deserialize;

use task::{Task, TaskCommand};
use view::{TaskRow, Tasks};

/// `POST /tasks` with `{"title": "..."}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AddTask {
    title: String,
}

fn main() -> std::process::ExitCode {
    let tasks = CommandRoutes::<Task>::new("/tasks")
        .create(Route::post("/tasks", "Add a task"), |id, body: AddTask| {
            Ok(TaskCommand::Add { id, title: body.title })
        })
        .command(
            Route::post("/tasks/{id}/complete", "Complete a task").optional_body(),
            |id, NoFields {}| Ok(TaskCommand::Complete { id }),
        );
    App::new("todo").aggregate(tasks).projection(Tasks).queries(queries()).run()
}

/// `GET /tasks`, paged by id, `?done=0` or `?done=1` for open or done ones.
fn queries() -> QueryRoutes {
    let list = ListRoute::<TaskRow>::new(
        "/tasks",
        View::new("tasks"),
        "SELECT id, title, done FROM tasks",
    )
    .key(Key::text("id"))
    .filter(Filter::integer("done", 0, 1).eq("done"));
    QueryRoutes::new().list(list)
}
