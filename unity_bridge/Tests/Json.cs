// A small JSON reader for the shared test vectors (tests/vectors/*.json). The core itself
// parses no JSON; the tests need a reader that works the same under mono here and in
// Unity's test runner, where System.Web.Extensions and DataContractJsonSerializer are not
// both available, so this one is written out: objects become Dictionary<string, object>,
// arrays List<object>, integers long (exact: session times near 1.8e18 ns do not fit a
// double), other numbers double, and true, false, null themselves.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace Holo.Bridge.Core.Tests
{
    public static class Json
    {
        public static object Parse(string text)
        {
            int at = 0;
            object value = Value(text, ref at);
            Space(text, ref at);
            if (at != text.Length) throw Error(text, at, "text after the value");
            return value;
        }

        static Exception Error(string text, int at, string what)
        {
            return new FormatException("JSON: " + what + " at character " + at);
        }

        static void Space(string s, ref int at)
        {
            while (at < s.Length && (s[at] == ' ' || s[at] == '\n' || s[at] == '\r' || s[at] == '\t')) at++;
        }

        static object Value(string s, ref int at)
        {
            Space(s, ref at);
            if (at >= s.Length) throw Error(s, at, "a value expected");
            char c = s[at];
            if (c == '{') return Object(s, ref at);
            if (c == '[') return Array(s, ref at);
            if (c == '"') return String(s, ref at);
            if (Word(s, ref at, "true")) return true;
            if (Word(s, ref at, "false")) return false;
            if (Word(s, ref at, "null")) return null;
            if (c == '-' || (c >= '0' && c <= '9')) return Number(s, ref at);
            if (Word(s, ref at, "NaN")) return double.NaN;
            if (Word(s, ref at, "Infinity")) return double.PositiveInfinity;
            throw Error(s, at, "unexpected '" + c + "'");
        }

        static bool Word(string s, ref int at, string word)
        {
            if (string.CompareOrdinal(s, at, word, 0, word.Length) != 0) return false;
            at += word.Length;
            return true;
        }

        static Dictionary<string, object> Object(string s, ref int at)
        {
            var result = new Dictionary<string, object>();
            at++; // {
            Space(s, ref at);
            if (s[at] == '}') { at++; return result; }
            while (true)
            {
                Space(s, ref at);
                string key = String(s, ref at);
                Space(s, ref at);
                if (s[at] != ':') throw Error(s, at, "':' expected");
                at++;
                result[key] = Value(s, ref at);
                Space(s, ref at);
                if (s[at] == ',') { at++; continue; }
                if (s[at] == '}') { at++; return result; }
                throw Error(s, at, "',' or '}' expected");
            }
        }

        static List<object> Array(string s, ref int at)
        {
            var result = new List<object>();
            at++; // [
            Space(s, ref at);
            if (s[at] == ']') { at++; return result; }
            while (true)
            {
                result.Add(Value(s, ref at));
                Space(s, ref at);
                if (s[at] == ',') { at++; continue; }
                if (s[at] == ']') { at++; return result; }
                throw Error(s, at, "',' or ']' expected");
            }
        }

        static string String(string s, ref int at)
        {
            if (s[at] != '"') throw Error(s, at, "a string expected");
            at++;
            var b = new StringBuilder();
            while (s[at] != '"')
            {
                char c = s[at++];
                if (c != '\\') { b.Append(c); continue; }
                char e = s[at++];
                switch (e)
                {
                    case '"': b.Append('"'); break;
                    case '\\': b.Append('\\'); break;
                    case '/': b.Append('/'); break;
                    case 'b': b.Append('\b'); break;
                    case 'f': b.Append('\f'); break;
                    case 'n': b.Append('\n'); break;
                    case 'r': b.Append('\r'); break;
                    case 't': b.Append('\t'); break;
                    case 'u':
                        b.Append((char)int.Parse(s.Substring(at, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                        at += 4;
                        break;
                    default: throw Error(s, at, "bad escape");
                }
            }
            at++;
            return b.ToString();
        }

        static object Number(string s, ref int at)
        {
            int start = at;
            bool integer = true;
            if (s[at] == '-') at++;
            while (at < s.Length)
            {
                char c = s[at];
                if (c >= '0' && c <= '9') { at++; continue; }
                if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') { integer = false; at++; continue; }
                break;
            }
            string text = s.Substring(start, at - start);
            long whole;
            if (integer && long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out whole)) return whole;
            if (text == "-Infinity") return double.NegativeInfinity;
            return double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);
        }
    }

    /// <summary>Typed access to parsed JSON, failing with the path that was wrong.</summary>
    public static class J
    {
        public static Dictionary<string, object> Obj(object value) { return (Dictionary<string, object>)value; }
        public static List<object> Arr(object value) { return (List<object>)value; }
        public static object At(object value, string key) { return Obj(value)[key]; }
        public static Dictionary<string, object> Obj(object value, string key) { return Obj(At(value, key)); }
        public static List<object> Arr(object value, string key) { return Arr(At(value, key)); }
        public static string Str(object value, string key) { return (string)At(value, key); }
        public static bool Has(object value, string key) { return Obj(value).ContainsKey(key); }
        public static bool Bool(object value, string key) { return (bool)At(value, key); }
        public static long Long(object value) { return value is long ? (long)value : checked((long)(double)value); }
        public static long Long(object value, string key) { return Long(At(value, key)); }
        public static double Num(object value) { return value is long ? (long)value : (double)value; }
        public static double Num(object value, string key) { return Num(At(value, key)); }

        public static Vec3 Vec3(object value)
        {
            List<object> a = Arr(value);
            return new Vec3(Num(a[0]), Num(a[1]), Num(a[2]));
        }

        public static Quat Quat(object value)
        {
            List<object> a = Arr(value);
            return new Quat(Num(a[0]), Num(a[1]), Num(a[2]), Num(a[3]));
        }

        /// <summary>{"position": [x, y, z], "rotation": [x, y, z, w]} (Pose.to_json).</summary>
        public static Pose Pose(object value)
        {
            return new Pose(Vec3(At(value, "position")), Quat(At(value, "rotation")));
        }
    }
}
