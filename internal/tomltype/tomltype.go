// Package tomltype names the type of a decoded TOML value for error messages, so every
// file the broker reads words a type mistake the same way.
package tomltype

// Describe returns "a string", "an integer", "a float", "a boolean", "a table",
// "an array" or "a date/time" for a value decoded by go-toml.
func Describe(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case map[string]any:
		return "a table"
	case []any, []map[string]any:
		return "an array"
	default:
		return "a date/time"
	}
}
