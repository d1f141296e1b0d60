// Package argocdhealth runs deploy/argocd/health.lua as Argo CD runs a health check from
// argocd-cm (util/lua/lua.go in argoproj/argo-cd, with resource.customizations.useOpenLibs
// unset): a fresh gopher-lua state with only the package, base and table libraries (Argo CD
// also opens a reduced os library, which the script does not use, so a script that did would
// fail here), the object as the global obj, a one-second limit, and the returned table read as
// {status, message}, an unknown status read as Unknown.
package argocdhealth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Health is what Argo CD takes from the script's returned table.
type Health struct {
	Status  string
	Message string
}

// validStatus are the health status codes Argo CD accepts from a script.
var validStatus = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

// Run runs script with obj set to object and returns the health it reports.
func Run(script string, object map[string]any) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name))
		if err != nil {
			return Health{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, object))
	if err := l.DoString(script); err != nil {
		return Health{}, err
	}
	returned := l.Get(-1)
	table, ok := returned.(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("expect table output from Lua script, not %s", returned.Type())
	}
	status, err := stringField(table, "status")
	if err != nil {
		return Health{}, err
	}
	message, err := stringField(table, "message")
	if err != nil {
		return Health{}, err
	}
	if !validStatus[status] {
		return Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return Health{Status: status, Message: message}, nil
}

// stringField is table[key] as Argo CD's JSON round trip reads it into a string field: absent
// is empty, anything but a string an error.
func stringField(table *lua.LTable, key string) (string, error) {
	switch value := table.RawGetString(key).(type) {
	case *lua.LNilType:
		return "", nil
	case lua.LString:
		return string(value), nil
	default:
		return "", fmt.Errorf("%s is a %s, not a string", key, value.Type())
	}
}

// decodeValue is Argo CD's conversion of an unstructured object into Lua values.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case json.Number:
		return lua.LString(converted)
	case int:
		return lua.LNumber(converted)
	case int32:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case []any:
		array := l.CreateTable(len(converted), 0)
		for _, item := range converted {
			array.Append(decodeValue(l, item))
		}
		return array
	case map[string]any:
		table := l.CreateTable(0, len(converted))
		for key, item := range converted {
			table.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return table
	}
	return lua.LNil
}

// LoadObject reads a JSON object as the apiserver's unstructured objects hold it: whole
// numbers as int64, others as float64.
func LoadObject(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	var object map[string]any
	if err := decoder.Decode(&object); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	converted, ok := convertNumbers(object).(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: not an object", path)
	}
	return converted, nil
}

func convertNumbers(value any) any {
	switch v := value.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		if f, err := v.Float64(); err == nil {
			return f
		}
		return v
	case []any:
		for i := range v {
			v[i] = convertNumbers(v[i])
		}
	case map[string]any:
		for key := range v {
			v[key] = convertNumbers(v[key])
		}
	}
	return value
}
