//! Nodes, jobs and groups of a project.

use super::*;
use crate::model::{Group, Job, Node};

impl Store {
    /// The project's nodes in inventory order.
    pub fn nodes(&self, project: u64) -> Result<Vec<Node>> {
        self.read(|tx| {
            let order = tx.open_table(NODE_ORDER)?;
            let nodes = tx.open_table(NODES)?;
            let mut out = Vec::new();
            for row in order.range((project, 0)..=(project, u64::MAX))? {
                let (_, name) = row?;
                if let Some(v) = nodes.get((project, name.value()))? {
                    out.push(from_json(v.value())?);
                }
            }
            Ok(out)
        })
    }

    /// Node names of a project in inventory order.
    pub fn node_names(&self, project: u64) -> Result<Vec<String>> {
        self.read(|tx| {
            let order = tx.open_table(NODE_ORDER)?;
            let mut out = Vec::new();
            for row in order.range((project, 0)..=(project, u64::MAX))? {
                out.push(row?.1.value().to_string());
            }
            Ok(out)
        })
    }

    /// Inserts or updates nodes; new ones go to the end of the inventory.
    pub fn upsert_nodes(&self, project: u64, user: &str, nodes: &[Node]) -> Result<()> {
        self.write(|tx| {
            {
                let mut t = tx.open_table(NODES)?;
                let mut seqs = tx.open_table(NODE_SEQ)?;
                let mut order = tx.open_table(NODE_ORDER)?;
                for n in nodes {
                    let known = seqs.get((project, n.name.as_str()))?.is_some();
                    if !known {
                        let seq = next_id(tx, "node_seq")?;
                        seqs.insert((project, n.name.as_str()), seq)?;
                        order.insert((project, seq), n.name.as_str())?;
                    }
                    t.insert((project, n.name.as_str()), to_json(n)?.as_slice())?;
                }
            }
            let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            oplog(
                tx,
                project,
                user,
                "EDIT NODES",
                &format!("nodes {}", names.join(",")),
            )
        })
    }

    pub fn delete_node(&self, project: u64, user: &str, name: &str) -> Result<()> {
        self.write(|tx| {
            let seq = tx
                .open_table(NODE_SEQ)?
                .remove((project, name))?
                .map(|v| v.value());
            let Some(seq) = seq else {
                return Err(Error::NotFound(format!(
                    "no node {name:?} in project {project}"
                )));
            };
            tx.open_table(NODE_ORDER)?.remove((project, seq))?;
            tx.open_table(NODES)?.remove((project, name))?;
            oplog(
                tx,
                project,
                user,
                "EDIT NODES",
                &format!("delete node {name}"),
            )
        })
    }

    pub fn jobs(&self, project: u64) -> Result<Vec<Job>> {
        self.read(|tx| {
            let t = tx.open_table(JOBS)?;
            let mut out = Vec::new();
            for row in t.range((project, "")..)? {
                let (k, v) = row?;
                if k.value().0 != project {
                    break;
                }
                out.push(from_json(v.value())?);
            }
            Ok(out)
        })
    }

    pub fn job(&self, project: u64, name: &str) -> Result<Option<Job>> {
        self.read(|tx| get_json(&tx.open_table(JOBS)?, (project, name)))
    }

    /// Creates or replaces a job. `build` gets the stored version (to keep
    /// step uuids) and returns the job to store, or a validation error.
    pub fn put_job(
        &self,
        project: u64,
        user: &str,
        name: &str,
        build: impl FnOnce(Option<Job>) -> Result<Job>,
    ) -> Result<Job> {
        self.write(|tx| {
            let mut t = tx.open_table(JOBS)?;
            let old: Option<Job> = get_json(&t, (project, name))?;
            let job = build(old)?;
            t.insert((project, name), to_json(&job)?.as_slice())?;
            drop(t);
            oplog(tx, project, user, "EDIT JOB", &format!("job {name}"))?;
            Ok(job)
        })
    }

    pub fn delete_job(&self, project: u64, user: &str, name: &str) -> Result<()> {
        self.write(|tx| {
            if tx.open_table(JOBS)?.remove((project, name))?.is_none() {
                return Err(Error::NotFound(format!(
                    "no job {name:?} in project {project}"
                )));
            }
            oplog(tx, project, user, "DELETE JOB", &format!("job {name}"))
        })
    }

    /// The groups of a project, id descending.
    pub fn groups(&self, project: u64) -> Result<Vec<Group>> {
        self.read(|tx| {
            let idx = tx.open_table(GROUP_INDEX)?;
            let groups = tx.open_table(GROUPS)?;
            let mut out = Vec::new();
            for row in idx.range((project, 0)..=(project, u64::MAX))?.rev() {
                let (k, _) = row?;
                if let Some(v) = groups.get(k.value().1)? {
                    out.push(from_json(v.value())?);
                }
            }
            Ok(out)
        })
    }

    /// A group of this project; a group of another project is not found.
    pub fn group(&self, project: u64, id: u64) -> Result<Option<Group>> {
        self.read(|tx| {
            let g: Option<Group> = get_json(&tx.open_table(GROUPS)?, id)?;
            Ok(g.filter(|g| g.projectid == project))
        })
    }

    pub fn group_by_name(&self, project: u64, name: &str) -> Result<Option<Group>> {
        self.read(|tx| {
            let id = tx
                .open_table(GROUP_NAMES)?
                .get((project, name))?
                .map(|v| v.value());
            match id {
                Some(id) => get_json(&tx.open_table(GROUPS)?, id),
                None => Ok(None),
            }
        })
    }

    /// Creates (`id = None`) or updates a group. Names are unique per project (409).
    pub fn save_group(&self, user: &str, id: Option<u64>, mut g: Group) -> Result<Group> {
        self.write(|tx| {
            let mut groups = tx.open_table(GROUPS)?;
            let mut names = tx.open_table(GROUP_NAMES)?;
            let old: Option<Group> = match id {
                Some(id) => {
                    let old: Option<Group> = get_json(&groups, id)?;
                    match old.filter(|o| o.projectid == g.projectid) {
                        Some(o) => Some(o),
                        None => {
                            return Err(Error::NotFound(format!(
                                "no group {id} in project {}",
                                g.projectid
                            )))
                        }
                    }
                }
                None => None,
            };
            if let Some(other) = names
                .get((g.projectid, g.name.as_str()))?
                .map(|v| v.value())
            {
                if Some(other) != id {
                    return Err(Error::Conflict(format!(
                        "name: a group named {:?} already exists",
                        g.name
                    )));
                }
            }
            g.id = match id {
                Some(id) => id,
                None => next_id(tx, "group")?,
            };
            if let Some(o) = &old {
                names.remove((o.projectid, o.name.as_str()))?;
            }
            names.insert((g.projectid, g.name.as_str()), g.id)?;
            groups.insert(g.id, to_json(&g)?.as_slice())?;
            tx.open_table(GROUP_INDEX)?
                .insert((g.projectid, g.id), ())?;
            drop((groups, names));
            let title = if old.is_some() {
                "EDIT GROUP"
            } else {
                "CREATE GROUP"
            };
            oplog(tx, g.projectid, user, title, &format!("group {}", g.name))?;
            Ok(g)
        })
    }

    pub fn delete_group(&self, project: u64, user: &str, id: u64) -> Result<()> {
        self.write(|tx| {
            let mut groups = tx.open_table(GROUPS)?;
            let g: Option<Group> = get_json(&groups, id)?;
            let Some(g) = g.filter(|g| g.projectid == project) else {
                return Err(Error::NotFound(format!(
                    "no group {id} in project {project}"
                )));
            };
            groups.remove(id)?;
            tx.open_table(GROUP_NAMES)?
                .remove((project, g.name.as_str()))?;
            tx.open_table(GROUP_INDEX)?.remove((project, id))?;
            drop(groups);
            oplog(
                tx,
                project,
                user,
                "DELETE GROUP",
                &format!("group {}", g.name),
            )
        })
    }
}
