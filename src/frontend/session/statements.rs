//! Named prepared statements under transaction pooling: `Parse`, `Bind`,
//! `Describe` and `Close` are mapped onto pooled server statements.

use std::sync::Arc;

use super::*;

impl Session {
    pub(super) async fn on_parse(&mut self, frame: Frame) -> Result<(), End> {
        let Some(parse) = messages::parse_body(frame.body()) else {
            return Err(malformed("Parse"));
        };
        if self.config.log.queries {
            tracing::info!(parent: &self.span, query = %query_text(parse.query), "parse");
        }
        let planned = self.server.is_none();
        let parsed = self
            .last_parse
            .look_at(&self.shared.classifier, parse.query);
        let class = parsed.class;
        // The classification says whether the text has a session effect at
        // all; most do not, and need no second look.
        let effect = if class.touches_session {
            session_effect(&query_text(parse.query))
        } else {
            SessionEffect::None
        };
        if let SessionEffect::Pin(reason) = effect {
            self.pin(reason);
        }
        if !planned {
            self.note_class(&class);
        }
        if parse.name.is_empty() {
            self.unnamed_effect = effect;
            self.unnamed_class = Some(class);
            if self.ensure_server(b'P').await {
                self.forward(&frame);
                self.expected.push(Expected::reply_to(b'P'));
            }
            return Ok(());
        }
        let client_name = parse.name.to_vec();
        if self.statements.get(&client_name).is_some() {
            let error = PgError::error(
                SqlState::DUPLICATE_PREPARED_STATEMENT,
                format!(
                    "prepared statement \"{}\" already exists",
                    String::from_utf8_lossy(&client_name)
                ),
            );
            self.reject(error, b'P');
            return Ok(());
        }
        let rest_offset = 5 + client_name.len() + 1;
        let parse_rest = frame.slice_from(rest_offset);
        let statement = Arc::new(PreparedStatement {
            server_name: self.shared.statement_names.name_for(&parse_rest),
            parse_rest,
            effect,
            class,
            may_copy: parsed.may_copy,
        });
        if !self.ensure_server(b'P').await {
            return Ok(());
        }
        self.statements
            .insert(client_name.clone(), statement.clone());
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        if server.prepared.contains(&statement.server_name) {
            self.reply(messages::parse_complete());
        } else {
            server.prepared.insert(&statement.server_name);
            self.server_out.extend_from_slice(&messages::parse_renamed(
                &statement.server_name,
                &statement.parse_rest,
            ));
            self.expected.push(Expected::Reply {
                ends_with: EndTags::of(b"1"),
                prepared: Some(Box::new(PreparedOnServer {
                    server_name: statement.server_name.clone(),
                    client_name: Some(client_name),
                })),
            });
        }
        Ok(())
    }

    /// Looks up a client statement by name, rejecting the request if the
    /// client never prepared it.
    pub(super) fn lookup_statement(
        &mut self,
        name: &[u8],
        tag: u8,
    ) -> Option<Arc<PreparedStatement>> {
        let statement = self.statements.get(name).cloned();
        if statement.is_none() {
            let error = PgError::error(
                SqlState::INVALID_SQL_STATEMENT_NAME,
                format!(
                    "prepared statement \"{}\" does not exist",
                    String::from_utf8_lossy(name)
                ),
            );
            self.reject(error, tag);
        }
        statement
    }

    /// Prepares a client statement on the attached server connection if it
    /// is not there yet; the server's `ParseComplete` is swallowed.
    pub(super) fn ensure_prepared(&mut self, statement: &PreparedStatement) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        if server.prepared.insert(&statement.server_name) {
            self.server_out.extend_from_slice(&messages::parse_renamed(
                &statement.server_name,
                &statement.parse_rest,
            ));
            self.expected.push(Expected::Injected {
                reply: b'1',
                prepared: Some(Box::new(PreparedOnServer {
                    server_name: statement.server_name.clone(),
                    client_name: None,
                })),
            });
        }
    }

    pub(super) async fn on_bind(&mut self, frame: Frame) -> Result<(), End> {
        let Some((portal, statement_name, rest)) = messages::bind_body(frame.body()) else {
            return Err(malformed("Bind"));
        };
        if statement_name.is_empty() {
            if self.ensure_server(b'B').await {
                self.forward(&frame);
                self.unnamed_bind_forwarded();
            }
            return Ok(());
        }
        let Some(statement) = self.lookup_statement(statement_name, b'B') else {
            return Ok(());
        };
        self.bound_effect = statement.effect.clone();
        self.note_class(&statement.class);
        if self.ensure_server(b'B').await {
            self.ensure_prepared(&statement);
            messages::put_bind_renamed(&mut self.server_out, portal, &statement.server_name, rest);
            self.expected.push(Expected::reply_to(b'B'));
        }
        Ok(())
    }

    pub(super) async fn on_describe(&mut self, frame: Frame) -> Result<(), End> {
        let Some((kind, name)) = messages::describe_or_close_body(frame.body()) else {
            return Err(malformed("Describe"));
        };
        if kind == b'S' && !name.is_empty() {
            let Some(statement) = self.lookup_statement(name, b'D') else {
                return Ok(());
            };
            if self.ensure_server(b'D').await {
                self.ensure_prepared(&statement);
                self.server_out
                    .extend_from_slice(&messages::describe_or_close(
                        b'D',
                        b'S',
                        &statement.server_name,
                    ));
                self.expected.push(Expected::reply_to(b'D'));
            }
        } else if self.ensure_server(b'D').await {
            self.forward(&frame);
            self.expected.push(Expected::reply_to(b'D'));
        }
        Ok(())
    }

    /// `Close` of a named statement only forgets the client's name: the
    /// server copy stays cached for other clients.
    pub(super) fn on_close(&mut self, frame: Frame) -> Result<(), End> {
        let Some((kind, name)) = messages::describe_or_close_body(frame.body()) else {
            return Err(malformed("Close"));
        };
        if kind == b'S' && !name.is_empty() {
            self.statements.remove(name);
            self.reply(messages::close_complete());
        } else if self.server.is_some() {
            self.forward(&frame);
            self.expected.push(Expected::reply_to(b'C'));
        } else {
            self.reply(messages::close_complete());
        }
        Ok(())
    }
}
