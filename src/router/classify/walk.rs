//! A serde serializer that walks a whole pg_query parse tree, so no node
//! type can hide a write or a function call.

use std::fmt;

use serde::ser::{self, Serialize};

use super::builtins::*;

#[derive(Default)]
pub(super) struct Scan {
    pub(super) writes: bool,
    pub(super) functions: Vec<String>,
    /// Name parts of the `FuncCall` whose `funcname` is being visited.
    collecting: Option<Vec<String>>,
}

impl Scan {
    /// Notes a node; `Err` stops the walk once the query is known to write.
    fn visit_struct(&mut self, name: &str) -> Result<(), Stop> {
        // Nested statements inside a SELECT are data-modifying CTEs.
        let writes = matches!(name, "IntoClause" | "LockingClause")
            || (name.ends_with("Stmt") && name != "SelectStmt");
        if writes {
            self.writes = true;
            return Err(Stop);
        }
        Ok(())
    }

    pub(super) fn visit_call(&mut self, parts: Vec<String>) -> Result<(), Stop> {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        match function_kind(&refs) {
            FunctionKind::Writes => {
                self.writes = true;
                Err(Stop)
            }
            FunctionKind::Reads => Ok(()),
            FunctionKind::Unknown => {
                let name = parts.join(".").to_lowercase();
                if !self.functions.contains(&name) {
                    self.functions.push(name);
                }
                Ok(())
            }
        }
    }
}

/// Ends a tree scan early (or reports a serde error, which also ends it).
#[derive(Debug)]
pub(super) struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("scan stopped")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Stop
    }
}

/// A struct, sequence or map being visited.
pub(super) struct Compound<'a> {
    scan: &'a mut Scan,
    name: &'static str,
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        value.serialize(&mut *self.scan)
    }
}

/// Implements serializer methods that ignore their value (numbers, flags).
macro_rules! ignore {
    ($($method:ident: $type:ty),* $(,)?) => {
        $(fn $method(self, _: $type) -> Result<(), Stop> {
            Ok(())
        })*
    };
}

/// Implements the sequence-like compound traits: visit every element.
macro_rules! sequence {
    ($($trait:path: $method:ident),* $(,)?) => {
        $(impl $trait for Compound<'_> {
            type Ok = ();
            type Error = Stop;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
                self.element(value)
            }
            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        })*
    };
}

impl<'a> ser::Serializer for &'a mut Scan {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    ignore! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_f32: f32, serialize_f64: f64, serialize_char: char,
        serialize_bytes: &[u8], serialize_unit_struct: &'static str,
    }
    fn serialize_str(self, value: &str) -> Result<(), Stop> {
        if let Some(parts) = &mut self.collecting {
            parts.push(value.to_owned());
        }
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, Stop> {
        Ok(Compound {
            scan: self,
            name: "",
        })
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, Stop> {
        self.serialize_seq(None)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Stop> {
        self.serialize_seq(None)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Stop> {
        self.serialize_seq(None)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>, Stop> {
        self.serialize_seq(None)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Compound<'a>, Stop> {
        self.visit_struct(name)?;
        Ok(Compound { scan: self, name })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, Stop> {
        self.serialize_struct(variant, len)
    }
}

sequence! {
    ser::SerializeSeq: serialize_element,
    ser::SerializeTuple: serialize_element,
    ser::SerializeTupleStruct: serialize_field,
    ser::SerializeTupleVariant: serialize_field,
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Stop> {
        self.element(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        self.element(value)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        if self.name == "FuncCall" && key == "funcname" {
            let outer = self.scan.collecting.replace(Vec::new());
            let visited = value.serialize(&mut *self.scan);
            let parts = std::mem::replace(&mut self.scan.collecting, outer).unwrap_or_default();
            visited?;
            self.scan.visit_call(parts)
        } else {
            self.element(value)
        }
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}
