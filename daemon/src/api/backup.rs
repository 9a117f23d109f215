//! `GET /backup` (admin on `*`): streams a consistent snapshot of the
//! whole store, taken by `ops::backup`.

use super::*;

pub fn routes(s: &mut tide::Server<Arc<App>>) {
    s.at("/backup").get(endpoint);
}

async fn endpoint(req: Req) -> tide::Result {
    Ok(match serve(req).await {
        Ok(r) => r,
        Err(e) => render(Err(e)),
    })
}

async fn serve(req: Req) -> Result<tide::Response> {
    let who = principal(&req)?;
    if who.role_on_all() != Some(Role::Admin) {
        return Err(Error::Forbidden(format!(
            "token {:?} needs the admin role on \"*\" to take a backup",
            who.name
        )));
    }
    let app = req.state();
    let (body, len) = crate::ops::backup::take(
        app.store.clone(),
        app.config.storage.data_dir.clone(),
        &who.name,
    )
    .await?;
    let mut r = tide::Response::new(200);
    r.set_content_type("application/octet-stream");
    r.insert_header("content-disposition", "attachment; filename=\"jobx.redb\"");
    r.set_body(tide::Body::from_reader(body, Some(len as usize)));
    Ok(r)
}
